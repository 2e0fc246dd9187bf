import { canonicalJson } from '../shared/canonical-json.ts';
import { decodeBase64, encodeBase64 } from '../shared/base64.ts';
import { signBytes, verifyBytes, type SigningKey } from '../shared/ed25519.ts';

type JsonObject = Record<string, unknown>;

/** The bytes a signature covers: canonical JSON without `signatures` and `unsigned`. */
function signedBytes(value: JsonObject): Buffer {
  const { signatures: _s, unsigned: _u, ...rest } = value;
  return Buffer.from(canonicalJson(rest), 'utf8');
}

/** Spec "Signing JSON": returns a copy with this server's signature added. */
export function signJson<T extends JsonObject>(value: T, serverName: string, key: SigningKey): T & { signatures: Record<string, Record<string, string>> } {
  const signature = encodeBase64(signBytes(key, signedBytes(value)));
  const existing = (value.signatures ?? {}) as Record<string, Record<string, string>>;
  return {
    ...value,
    signatures: { ...existing, [serverName]: { ...(existing[serverName] ?? {}), [key.keyId]: signature } },
  };
}

export function signatureOf(value: JsonObject, key: SigningKey): string {
  return encodeBase64(signBytes(key, signedBytes(value)));
}

/** Checks one base64 signature over `value` with a raw public key. */
export function verifySignature(value: JsonObject, signatureB64: string, publicKey: Uint8Array): boolean {
  const signature = decodeBase64(signatureB64);
  if (signature === null) return false;
  let bytes: Buffer;
  try {
    bytes = signedBytes(value);
  } catch {
    return false;
  }
  return verifyBytes(publicKey, bytes, signature);
}
