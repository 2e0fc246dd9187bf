import { randomBytes } from 'node:crypto';
import type { Db } from '../storage/drivers/database.ts';
import { FederationKeysStore } from '../storage/federation-keys-store.ts';
import { decodeBase64, encodeBase64 } from '../shared/base64.ts';
import { signingKeyFromSeed, type SigningKey } from '../shared/ed25519.ts';

/** Loads this server's signing key, generating and persisting it on first start. */
export async function loadOwnSigningKey(db: Db): Promise<SigningKey> {
  const row = await new FederationKeysStore(db).getOrCreateSigningKey(() => ({
    keyId: `ed25519:a_${randomBytes(3).toString('base64url').replace(/[-_]/g, 'x')}`,
    seed: encodeBase64(randomBytes(32)),
  }));
  const seed = decodeBase64(row.seed);
  if (seed === null) throw new Error(`stored signing key ${row.keyId} is not valid base64`);
  return signingKeyFromSeed(row.keyId, seed);
}
