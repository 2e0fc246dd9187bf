import type { CiphersuiteName, KeyPackage } from 'ts-mls';
import { makeKeyPackageRef, verifyKeyPackage } from 'ts-mls/keyPackage.js';
import { verifyLeafNodeSignatureKeyPackage } from 'ts-mls/leafNode.js';
import { encodeBase64 } from '../../src/sdk/index.ts';
import { ciphersuiteImpl } from './ciphersuite-impls.ts';
import { decodeMlsMessageBase64 } from './mls-wire.ts';

export type KeyPackageProblem =
  | 'undecodable'
  | 'not_a_key_package'
  | 'unsupported_ciphersuite'
  | 'bad_signature'
  | 'wrong_identity'
  | 'expired'
  | 'init_key_reused';

export type KeyPackageVerdict = { ok: true; ref: string; ciphersuite: CiphersuiteName } | { ok: false; problem: KeyPackageProblem };

/**
 * The credential identity this directory expects in a device's KeyPackage: the UTF-8 string
 * `<user_id>|<device_id>` (user IDs cannot contain `|`). MSC4244 leaves credentials open; this
 * binds a package to the account and device that uploaded it.
 */
export function credentialIdentity(userId: string, deviceId: string): string {
  return `${userId}|${deviceId}`;
}

/**
 * Checks an uploaded KeyPackage (RFC 9420 §10.1): an MLSMessage of wire format
 * mls_key_package, version mls10, an allowed ciphersuite, both signatures (the package's and its
 * leaf node's) valid under the leaf's signature key, a basic credential naming the uploading user
 * and device, a current lifetime, and an init_key different from the leaf's encryption_key.
 */
export async function validateKeyPackage(
  text: string,
  uploader: { userId: string; deviceId: string },
  allowed: readonly string[],
  now = Date.now(),
): Promise<KeyPackageVerdict> {
  const decoded = decodeMlsMessageBase64(text);
  if (decoded === null) return { ok: false, problem: 'undecodable' };
  if (decoded.message.wireformat !== 'mls_key_package') return { ok: false, problem: 'not_a_key_package' };
  const kp: KeyPackage = decoded.message.keyPackage;
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
  return { ok: true, ref: encodeBase64(await makeKeyPackageRef(kp, impl.hash)), ciphersuite: kp.cipherSuite };
}
