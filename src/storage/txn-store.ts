import { and, eq, lt } from 'drizzle-orm';
import type { Db } from './database.ts';
import { txnIds } from './schema.ts';

export interface TxnKey {
  userId: string;
  deviceId: string;
  /** The endpoint including anything that scopes the txn id, e.g. `sendToDevice/m.room_key`. */
  endpoint: string;
  txnId: string;
}

/** Persisted client transaction IDs and the response each first got. */
export class TxnStore {
  constructor(private readonly db: Db) {}

  async getResponse(key: TxnKey): Promise<string | null> {
    const rows = await this.db
      .select({ response: txnIds.response })
      .from(txnIds)
      .where(
        and(
          eq(txnIds.userId, key.userId),
          eq(txnIds.deviceId, key.deviceId),
          eq(txnIds.endpoint, key.endpoint),
          eq(txnIds.txnId, key.txnId),
        ),
      );
    return rows[0]?.response ?? null;
  }

  /**
   * Records the txn id inside the caller's transaction. Returns false when it was already
   * recorded; a concurrent duplicate waits on the unique key until the first one commits.
   */
  async claim(key: TxnKey, response: string): Promise<boolean> {
    const rows = await this.db
      .insert(txnIds)
      .values({ ...key, response, createdTs: Date.now() })
      .onConflictDoNothing()
      .returning({ txnId: txnIds.txnId });
    return rows.length === 1;
  }

  async deleteOlderThan(ts: number): Promise<number> {
    const rows = await this.db.delete(txnIds).where(lt(txnIds.createdTs, ts)).returning({ txnId: txnIds.txnId });
    return rows.length;
  }
}
