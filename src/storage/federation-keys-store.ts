import { and, asc, eq, sql } from 'drizzle-orm';
import type { Db } from './drivers/database.ts';
import { remoteServerKeys, serverSigningKeys } from './schema.ts';

/** This server's signing key and the cached verify keys of other servers. */
export class FederationKeysStore {
  constructor(private readonly db: Db) {}

  /**
   * The signing key, created on first start. Processes racing to create it may each insert one;
   * all then agree on the oldest, so every process signs with the same key.
   */
  async getOrCreateSigningKey(candidate: () => { keyId: string; seed: string }): Promise<{ keyId: string; seed: string }> {
    const existing = await this.oldest();
    if (existing !== null) return existing;
    await this.db.insert(serverSigningKeys).values({ ...candidate(), createdTs: Date.now() }).onConflictDoNothing();
    const created = await this.oldest();
    if (created === null) throw new Error('signing key vanished after insert');
    return created;
  }

  private async oldest(): Promise<{ keyId: string; seed: string } | null> {
    const rows = await this.db
      .select({ keyId: serverSigningKeys.keyId, seed: serverSigningKeys.seed })
      .from(serverSigningKeys)
      .orderBy(asc(serverSigningKeys.createdTs), asc(serverSigningKeys.keyId))
      .limit(1);
    return rows[0] ?? null;
  }

  async getRemoteKey(serverName: string, keyId: string): Promise<{ publicKey: string; validUntilTs: number } | null> {
    const rows = await this.db
      .select({ publicKey: remoteServerKeys.publicKey, validUntilTs: remoteServerKeys.validUntilTs })
      .from(remoteServerKeys)
      .where(and(eq(remoteServerKeys.serverName, serverName), eq(remoteServerKeys.keyId, keyId)));
    return rows[0] ?? null;
  }

  async putRemoteKeys(serverName: string, keys: { keyId: string; publicKey: string }[], validUntilTs: number): Promise<void> {
    if (keys.length === 0) return;
    const now = Date.now();
    await this.db
      .insert(remoteServerKeys)
      .values(keys.map((k) => ({ serverName, keyId: k.keyId, publicKey: k.publicKey, validUntilTs, fetchedTs: now })))
      .onConflictDoUpdate({
        target: [remoteServerKeys.serverName, remoteServerKeys.keyId],
        set: { publicKey: sql`excluded.public_key`, validUntilTs: sql`excluded.valid_until_ts`, fetchedTs: sql`excluded.fetched_ts` },
      });
  }
}
