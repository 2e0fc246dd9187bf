import type { CiphersuiteName, KeyPackage } from 'ts-mls';
import { decodeKeyPackage, makeKeyPackageRef, verifyKeyPackage } from 'ts-mls/keyPackage.js';
import { credentialTypes } from 'ts-mls/credentialType.js';
import { extensionTypeToNumber } from 'ts-mls/extension.js';
import { verifyLeafNodeSignatureKeyPackage } from 'ts-mls/leafNode.js';
import { decodeBase64, encodeBase64 } from '../../src/sdk/index.ts';
import { ciphersuiteImpl } from './ciphersuite-impls.ts';
import type { KeyPackageMetadata } from './key-package-metadata.ts';

export type KeyPackageProblem =
  | 'undecodable'
  | 'not_a_key_package'
  | 'unsupported_ciphersuite'
  | 'bad_signature'
  | 'wrong_identity'
  | 'expired'
  | 'init_key_reused';

export type KeyPackageVerdict = { ok: true; metadata: KeyPackageMetadata } | { ok: false; problem: KeyPackageProblem };

/** The `last_resort` KeyPackage extension (draft-ietf-mls-extensions, type 0x000A). */
export const LAST_RESORT_EXTENSION = 0x000a;

/**
 * The credential identity this server expects in a device's KeyPackage: the UTF-8 string
 * `<user_id>|<device_id>` (user IDs cannot contain `|`). MSC4244 leaves credentials open; this
 * binds a package to the account and device that uploaded it.
 */
export function credentialIdentity(userId: string, deviceId: string): string {
  return `${userId}|${deviceId}`;
}

/** A bare RFC 9420 KeyPackage (what MSC4244 uploads), decoded exactly (no trailing bytes), or null. */
export function decodeBareKeyPackage(bytes: Uint8Array): KeyPackage | null {
  try {
    const decoded = decodeKeyPackage(bytes, 0);
    return decoded === undefined || decoded[1] !== bytes.length ? null : decoded[0];
  } catch {
    // ts-mls throws on some malformed input rather than answering undefined.
    return null;
  }
}

/**
 * Checks an uploaded KeyPackage (RFC 9420 §10.1): a bare KeyPackage (MSC4244), version mls10,
 * an allowed ciphersuite, both signatures (the package's and its leaf node's) valid under the
 * leaf's signature key, a basic credential naming the uploading user and device, a current
 * lifetime, and an init_key different from the leaf's encryption_key. Returns what a claim is
 * matched against (MSC4244 `acceptable_ciphersuites`, `required_capabilities`).
 */
export async function validateKeyPackage(text: string, uploader: { userId: string; deviceId: string }, allowed: readonly string[], now = Date.now()): Promise<KeyPackageVerdict> {
  const bytes = decodeBase64(text);
  if (bytes === null || bytes.length === 0) return { ok: false, problem: 'undecodable' };
  const kp = decodeBareKeyPackage(bytes);
  if (kp === null) return { ok: false, problem: 'undecodable' };
  if (kp.version !== 'mls10') return { ok: false, problem: 'not_a_key_package' };
  if (!allowed.includes(kp.cipherSuite)) return { ok: false, problem: 'unsupported_ciphersuite' };
  const impl = await ciphersuiteImpl(kp.cipherSuite);
  if (impl === null) return { ok: false, problem: 'unsupported_ciphersuite' };
  try {
    if (!(await verifyKeyPackage(kp, impl.signature)) || !(await verifyLeafNodeSignatureKeyPackage(kp.leafNode, impl.signature))) {
      return { ok: false, problem: 'bad_signature' };
    }
  } catch {
    // A malformed public key makes WebCrypto throw instead of answering false.
    return { ok: false, problem: 'bad_signature' };
  }
  const credential = kp.leafNode.credential;
  if (credential.credentialType !== 'basic') return { ok: false, problem: 'wrong_identity' };
  let identity: string;
  try {
    identity = new TextDecoder('utf-8', { fatal: true }).decode(credential.identity);
  } catch {
    return { ok: false, problem: 'wrong_identity' };
  }
  if (identity !== credentialIdentity(uploader.userId, uploader.deviceId)) return { ok: false, problem: 'wrong_identity' };
  const { notBefore, notAfter } = kp.leafNode.lifetime;
  const nowSeconds = BigInt(Math.floor(now / 1000));
  if (nowSeconds < notBefore || nowSeconds > notAfter) return { ok: false, problem: 'expired' };
  if (Buffer.from(kp.initKey).equals(Buffer.from(kp.leafNode.hpkePublicKey))) return { ok: false, problem: 'init_key_reused' };
  const caps = kp.leafNode.capabilities;
  return {
    ok: true,
    metadata: {
      ciphersuite: kp.cipherSuite satisfies CiphersuiteName,
      ref: encodeBase64(await makeKeyPackageRef(kp, impl.hash)),
      extensions: [...caps.extensions],
      proposals: [...caps.proposals],
      credentials: caps.credentials.map((c) => credentialTypes[c]),
      last_resort: kp.extensions.some((e) => extensionTypeToNumber(e.extensionType) === LAST_RESORT_EXTENSION),
    },
  };
}
