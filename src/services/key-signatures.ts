import { MatrixError } from '../errors/matrix-error.ts';
import { canonicalJson } from '../shared/canonical-json.ts';
import type { E2eKeysStore, SignatureRow } from '../storage/e2e-keys-store.ts';
import type { DeviceLists } from './device-lists.ts';
import { checkRequestSize, ed25519PublicKey, hasValidSignature, isObject, publicKeyIdOf, signedPart, type CrossSigningType, type JsonObject } from './key-checks.ts';

export interface SignatureUploadDeps {
  store: E2eKeysStore;
  deviceLists: DeviceLists;
  /** Whether a user is on this server (signatures on other servers' users are ignored). */
  isLocal: (userId: string) => boolean;
}

/**
 * POST /keys/signatures/upload: a user's self-signing key over their devices, a device over
 * its user's master key, a user-signing key over another user's master key. Each signature is
 * checked against the signer's key and the object against what is stored; refusals are
 * reported per key in `failures`, the rest stored.
 */
export async function uploadSignatures(deps: SignatureUploadDeps, userId: string, body: Record<string, unknown>): Promise<JsonObject> {
  const failures: Record<string, Record<string, JsonObject>> = {};
  const fail = (target: string, keyId: string, errcode: string, error: string) => ((failures[target] ??= {})[keyId] = { errcode, error });
  const targets = Object.keys(body).filter((u) => deps.isLocal(u));
  checkRequestSize(Object.keys(body).length, Object.values(body).reduce<number>((n, m) => n + (isObject(m) ? Object.keys(m).length : 0), 0));
  const crossSigning = await deps.store.crossSigningKeys([...new Set([userId, ...targets])]);
  const own = crossSigning.get(userId);
  const keyOf = (user: string, type: CrossSigningType) => {
    const json = crossSigning.get(user)?.get(type);
    if (json === undefined) return null;
    const keyId = publicKeyIdOf(json);
    return { json, keyId, publicKey: ed25519PublicKey(keyId.slice('ed25519:'.length)) };
  };
  const ownDevices = new Map((await deps.store.deviceKeys([{ userId, deviceIds: [] }])).map((d) => [d.deviceId, d.keyJson]));
  const accepted: SignatureRow[] = [];
  for (const [target, objects] of Object.entries(body)) {
    if (!isObject(objects)) throw new MatrixError('M_BAD_JSON', `${target}: must map key ids to signed objects`);
    for (const [keyId, signed] of Object.entries(objects)) {
      if (!isObject(signed) || !isObject(signed.signatures) || !isObject(signed.signatures[userId])) {
        fail(target, keyId, 'M_INVALID_SIGNATURE', `no signature by ${userId}`);
        continue;
      }
      const stored = target === userId ? (ownDevices.get(keyId) ?? (keyOf(userId, 'master')?.keyId === `ed25519:${keyId}` ? keyOf(userId, 'master')?.json : undefined)) : keyOf(target, 'master')?.keyId === `ed25519:${keyId}` ? keyOf(target, 'master')?.json : undefined;
      if (stored === undefined) {
        fail(target, keyId, 'M_NOT_FOUND', target === userId ? 'No such device or master key' : "Only another user's master key can be signed");
        continue;
      }
      let same: boolean;
      try {
        same = canonicalJson(signedPart(signed)) === canonicalJson(signedPart(JSON.parse(stored) as JsonObject));
      } catch {
        same = false;
      }
      if (!same) {
        fail(target, keyId, 'M_INVALID_SIGNATURE', 'The signed object differs from the stored key');
        continue;
      }
      // Which of the uploader's keys may sign this target.
      const signers: { keyId: string; publicKey: Uint8Array | null }[] = [];
      if (target !== userId) {
        const usk = keyOf(userId, 'user_signing');
        if (usk !== null) signers.push(usk);
      } else if (ownDevices.has(keyId)) {
        const ssk = keyOf(userId, 'self_signing');
        if (ssk !== null) signers.push(ssk);
      } else {
        for (const [deviceId, json] of ownDevices) {
          const keys = (JSON.parse(json) as { keys?: Record<string, unknown> }).keys ?? {};
          signers.push({ keyId: `ed25519:${deviceId}`, publicKey: ed25519PublicKey(keys[`ed25519:${deviceId}`]) });
        }
        const master = keyOf(userId, 'master');
        if (own !== undefined && master !== null) signers.push(master);
      }
      const ofUploader = signed.signatures[userId] as Record<string, unknown>;
      let any = false;
      for (const [signerKeyId, signature] of Object.entries(ofUploader)) {
        const signer = signers.find((s) => s.keyId === signerKeyId);
        if (signer === undefined || signer.publicKey === null || typeof signature !== 'string') continue;
        if (!hasValidSignature(signed, userId, signerKeyId, signer.publicKey)) continue;
        if (signerKeyId === `ed25519:${keyId}` && target === userId) continue; // a key's own self-signature is already stored with it
        accepted.push({ signerUserId: userId, signerKeyId, targetUserId: target, targetKeyId: keyId, signature, targetIsDevice: target === userId && ownDevices.has(keyId) });
        any = true;
      }
      if (!any) fail(target, keyId, 'M_INVALID_SIGNATURE', 'No valid signature by a key of yours that may sign this');
    }
  }
  const position = await deps.store.addSignatures(accepted);
  if (accepted.length > 0) await deps.deviceLists.changed(position, accepted.map((s) => s.targetUserId));
  return { failures };
}
