import { randomBytes } from 'node:crypto';
import { encodeBase64 } from '../../src/shared/base64.ts';
import { signingKeyFromSeed, type SigningKey } from '../../src/shared/ed25519.ts';
import { signatureOf } from '../../src/federation/json-signing.ts';

type Json = Record<string, unknown>;

/** A fresh Ed25519 key named as Matrix names it: `ed25519:<name>` (a device ID, or the public key itself). */
export function newEd25519(name?: string): SigningKey & { publicB64: string } {
  const seed = randomBytes(32);
  const probe = signingKeyFromSeed('ed25519:x', seed);
  const publicB64 = encodeBase64(probe.publicKey);
  return { ...signingKeyFromSeed(`ed25519:${name ?? publicB64}`, seed), publicB64 };
}

/** Adds `signatures[userId][key.keyId]` over the object (spec "Signing JSON"). */
export function signAs<T extends Json>(value: T, userId: string, key: SigningKey): T {
  const signatures = (value.signatures ?? {}) as Record<string, Record<string, string>>;
  return { ...value, signatures: { ...signatures, [userId]: { ...(signatures[userId] ?? {}), [key.keyId]: signatureOf(value, key) } } };
}

/** What a device uploads: its identity keys, signed by its own Ed25519 key. */
export function deviceKeysFor(userId: string, deviceId: string, key = newEd25519(deviceId)): { keys: Json; key: SigningKey & { publicB64: string } } {
  const keys = {
    user_id: userId,
    device_id: deviceId,
    algorithms: ['m.olm.v1.curve25519-aes-sha2', 'm.megolm.v1.aes-sha2'],
    keys: { [`ed25519:${deviceId}`]: key.publicB64, [`curve25519:${deviceId}`]: encodeBase64(randomBytes(32)) },
  };
  return { keys: signAs(keys, userId, key), key };
}

/** `count` signed curve25519 one-time keys, named from `start`. */
export function oneTimeKeys(userId: string, deviceKey: SigningKey, count: number, start = 0): Record<string, Json> {
  const out: Record<string, Json> = {};
  for (let i = start; i < start + count; i++) {
    out[`signed_curve25519:AAAA${String(i).padStart(4, '0')}`] = signAs({ key: encodeBase64(randomBytes(32)) }, userId, deviceKey);
  }
  return out;
}

/** A cross-signing key of `usage`, signed by `signer` when given. */
export function crossSigningKey(userId: string, usage: string, key = newEd25519(), signer?: SigningKey): { json: Json; key: SigningKey & { publicB64: string } } {
  const json: Json = { user_id: userId, usage: [usage], keys: { [`ed25519:${key.publicB64}`]: key.publicB64 } };
  return { json: signer === undefined ? json : signAs(json, userId, signer), key };
}
