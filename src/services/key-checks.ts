import { MatrixError } from '../errors/matrix-error.ts';
import { decodeBase64 } from '../shared/base64.ts';
import { verifySignature } from '../federation/json-signing.ts';
import { canonicalJson, CanonicalJsonError } from '../shared/canonical-json.ts';

/**
 * The rules a key must follow before it is stored or believed: shapes, ids and self-signatures
 * (spec "End-to-end encryption": device keys, one-time keys, cross-signing). Pure functions; each
 * refusal is a Matrix error naming what is wrong.
 */

export type JsonObject = Record<string, unknown>;

export function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `value` as canonical JSON, or a 400 when it cannot be (floats, huge integers). */
export function canonicalOrRefuse(value: unknown, what: string): string {
  try {
    return canonicalJson(value);
  } catch (e) {
    if (e instanceof CanonicalJsonError) throw new MatrixError('M_BAD_JSON', `${what}: ${e.message}`);
    throw e;
  }
}

/** The raw 32-byte Ed25519 public key behind an unpadded-base64 string, or null. */
export function ed25519PublicKey(value: unknown): Uint8Array | null {
  if (typeof value !== 'string') return null;
  const raw = decodeBase64(value);
  return raw !== null && raw.length === 32 ? raw : null;
}

/** Whether `signed.signatures[userId][keyId]` is a valid signature by `publicKey`. */
export function hasValidSignature(signed: JsonObject, userId: string, keyId: string, publicKey: Uint8Array): boolean {
  const signatures = signed.signatures;
  if (!isObject(signatures)) return false;
  const byUser = signatures[userId];
  if (!isObject(byUser)) return false;
  const signature = byUser[keyId];
  return typeof signature === 'string' && verifySignature(signed, signature, publicKey);
}

/** The same object without `signatures` and `unsigned`: what a signature covers. */
export function signedPart(value: JsonObject): JsonObject {
  const { signatures: _s, unsigned: _u, ...rest } = value;
  return rest;
}

/**
 * Device keys as a device must upload them: naming this user and device, listing algorithms
 * and keys, and signed by the device's own Ed25519 key. Returns the canonical JSON to store.
 */
export function checkDeviceKeys(keys: unknown, userId: string, deviceId: string): string {
  if (!isObject(keys)) throw new MatrixError('M_BAD_JSON', 'device_keys must be an object');
  if (keys.user_id !== userId) throw new MatrixError('M_INVALID_PARAM', `device_keys.user_id must be ${userId}, the uploading user`);
  if (keys.device_id !== deviceId) throw new MatrixError('M_INVALID_PARAM', `device_keys.device_id must be ${deviceId}, the uploading device`);
  if (!Array.isArray(keys.algorithms) || !keys.algorithms.every((a) => typeof a === 'string')) {
    throw new MatrixError('M_BAD_JSON', 'device_keys.algorithms must be an array of strings');
  }
  if (!isObject(keys.keys) || !Object.values(keys.keys).every((k) => typeof k === 'string')) {
    throw new MatrixError('M_BAD_JSON', 'device_keys.keys must map key ids to strings');
  }
  const ed25519 = ed25519PublicKey(keys.keys[`ed25519:${deviceId}`]);
  if (ed25519 === null) throw new MatrixError('M_INVALID_PARAM', `device_keys.keys must hold the device's key ed25519:${deviceId} (32 bytes, unpadded base64)`);
  if (!isObject(keys.signatures)) throw new MatrixError('M_BAD_JSON', 'device_keys.signatures must be an object');
  const json = canonicalOrRefuse(keys, 'device_keys');
  if (!hasValidSignature(keys, userId, `ed25519:${deviceId}`, ed25519)) {
    throw new MatrixError('M_INVALID_SIGNATURE', `device_keys must be signed by the device's own key ed25519:${deviceId}`);
  }
  return json;
}

/** Splits `algorithm:key_id`, as one-time and fallback keys are named. */
export function splitKeyId(id: string, field: string): { algorithm: string; keyId: string } {
  const colon = id.indexOf(':');
  if (colon <= 0 || colon === id.length - 1 || id.length > 255) {
    throw new MatrixError('M_INVALID_PARAM', `${field}: key id ${JSON.stringify(id.slice(0, 100))} must be <algorithm>:<key_id>`);
  }
  return { algorithm: id.slice(0, colon), keyId: id.slice(colon + 1) };
}

export const CROSS_SIGNING_TYPES = ['master', 'self_signing', 'user_signing'] as const;
export type CrossSigningType = (typeof CROSS_SIGNING_TYPES)[number];

/**
 * A cross-signing key: this user's, with the usage its slot implies, exactly one Ed25519 key
 * named by its own public key. Returns the key id (`ed25519:<public key>`), the key and its JSON.
 */
export function checkCrossSigningKey(key: unknown, userId: string, type: CrossSigningType): { keyId: string; publicKey: Uint8Array; json: string } {
  const field = `${type}_key`;
  if (!isObject(key)) throw new MatrixError('M_BAD_JSON', `${field} must be an object`);
  if (key.user_id !== userId) throw new MatrixError('M_INVALID_PARAM', `${field}.user_id must be ${userId}`);
  if (!Array.isArray(key.usage) || !key.usage.includes(type) || !key.usage.every((u) => typeof u === 'string')) {
    throw new MatrixError('M_INVALID_PARAM', `${field}.usage must include "${type}"`);
  }
  const entries = isObject(key.keys) ? Object.entries(key.keys) : [];
  const only = entries[0];
  if (entries.length !== 1 || only === undefined || !only[0].startsWith('ed25519:')) {
    throw new MatrixError('M_INVALID_PARAM', `${field}.keys must hold exactly one ed25519 key`);
  }
  const publicKey = ed25519PublicKey(only[1]);
  if (publicKey === null || only[0] !== `ed25519:${String(only[1])}`) {
    throw new MatrixError('M_INVALID_PARAM', `${field}.keys: the key must be named ed25519:<its public key> (32 bytes, unpadded base64)`);
  }
  if (key.signatures !== undefined && !isObject(key.signatures)) throw new MatrixError('M_BAD_JSON', `${field}.signatures must be an object`);
  return { keyId: only[0], publicKey, json: canonicalOrRefuse(key, field) };
}

/** A key's JSON with `signatures[user][keyId] = signature` added for each row. */
export function withSignatures(keyJson: string, extra: readonly { signerUserId: string; signerKeyId: string; signature: string }[], unsigned?: JsonObject): JsonObject {
  const key = JSON.parse(keyJson) as JsonObject;
  if (extra.length > 0) {
    const signatures: Record<string, Record<string, unknown>> = isObject(key.signatures) ? (key.signatures as Record<string, Record<string, unknown>>) : {};
    for (const s of extra) signatures[s.signerUserId] = { ...(signatures[s.signerUserId] ?? {}), [s.signerKeyId]: s.signature };
    key.signatures = signatures;
  }
  if (unsigned !== undefined) key.unsigned = { ...(isObject(key.unsigned) ? key.unsigned : {}), ...unsigned };
  return key;
}

/** Most users in one /keys/query or /keys/claim, and most devices named in one request. */
export const MAX_USERS_PER_REQUEST = 1_000;
export const MAX_DEVICES_PER_REQUEST = 10_000;

export function checkRequestSize(users: number, devices: number): void {
  if (users > MAX_USERS_PER_REQUEST) throw new MatrixError('M_TOO_LARGE', `At most ${MAX_USERS_PER_REQUEST} users per request`);
  if (devices > MAX_DEVICES_PER_REQUEST) throw new MatrixError('M_TOO_LARGE', `At most ${MAX_DEVICES_PER_REQUEST} devices per request`);
}

/** `ed25519:<public key>` of a stored cross-signing key. */
export function publicKeyIdOf(json: string): string {
  const keys = (JSON.parse(json) as { keys?: Record<string, string> }).keys ?? {};
  return Object.keys(keys)[0] ?? '';
}
