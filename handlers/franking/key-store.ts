import { randomBytes } from 'node:crypto';
import { desc, eq, sql } from 'drizzle-orm';
import { type Db, decodeBase64, encodeBase64, type SigningKey, signingKeyFromSeed } from '../../src/sdk/index.ts';
import { frankingKeys } from './schema.ts';

export interface FrankingKey {
  version: number;
  hmacKey: Buffer;
  signing: SigningKey;
  createdTs: number;
  retiredTs: number | null;
}

type Row = typeof frankingKeys.$inferSelect;

function toKey(row: Row): FrankingKey {
  return {
    version: row.version,
    hmacKey: decodeBase64(row.hmacKey) ?? Buffer.alloc(0),
    signing: signingKeyFromSeed(`franking:${row.version}`, decodeBase64(row.signingSeed) ?? Buffer.alloc(0)),
    createdTs: row.createdTs,
    retiredTs: row.retiredTs,
  };
}

/**
 * The server's franking keys, in the database so every process uses the same ones. Creating
 * the first key and rotating are single INSERTs that lose gracefully to a concurrent one
 * (`on conflict do nothing` on the version), so two processes never mint the same version.
 */
export class FrankingKeyStore {
  private cached: { key: FrankingKey; until: number } | null = null;

  /**
   * `currentCacheMs`: how long `current()` may answer from memory. A rotation in another process
   * is then seen that much later, which is harmless: franks made with the previous key still
   * verify (old versions are kept).
   */
  constructor(
    private readonly db: Db,
    private readonly currentCacheMs = 0,
    // The module's clock (ctx.clock.now), so tests can move time; Date.now without a module.
    private readonly clockNow: () => number = Date.now,
  ) {}

  /** The key new franks are made with, created on first use. */
  async current(): Promise<FrankingKey> {
    const now = this.clockNow();
    if (this.cached !== null && now < this.cached.until) return this.cached.key;
    const [row] = await this.db.select().from(frankingKeys).orderBy(desc(frankingKeys.version)).limit(1);
    if (row === undefined) {
      await this.insertNext();
      return this.current();
    }
    const key = toKey(row);
    if (this.currentCacheMs > 0) this.cached = { key, until: now + this.currentCacheMs };
    return key;
  }

  async byVersion(version: number): Promise<FrankingKey | null> {
    const [row] = await this.db.select().from(frankingKeys).where(eq(frankingKeys.version, version));
    return row === undefined ? null : toKey(row);
  }

  async all(): Promise<FrankingKey[]> {
    await this.current();
    return (await this.db.select().from(frankingKeys).orderBy(frankingKeys.version)).map(toKey);
  }

  /** Makes a new current key; older ones are marked retired but kept for verification. */
  async rotate(now = this.clockNow()): Promise<FrankingKey> {
    await this.current();
    await this.insertNext(now);
    this.cached = null;
    const latest = await this.current();
    await this.db.execute(sql`update franking_keys set retired_ts = ${now} where version < ${latest.version} and retired_ts is null`);
    return latest;
  }

  private async insertNext(now = this.clockNow()): Promise<void> {
    const seed = randomBytes(32);
    const publicKey = signingKeyFromSeed('new', seed).publicKey;
    await this.db.execute(sql`
      insert into franking_keys (version, hmac_key, signing_seed, public_key, created_ts)
      select coalesce(max(version), 0) + 1, ${encodeBase64(randomBytes(32))}, ${encodeBase64(seed)}, ${encodeBase64(publicKey)}, ${now}
      from franking_keys
      on conflict (version) do nothing`);
  }
}
