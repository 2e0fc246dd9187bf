import { lt, sql, type Placeholder, type SQL } from 'drizzle-orm';
import type { Db } from './drivers/database.ts';
import { queryRows } from '../shared/query-rows.ts';
import { txnIds } from './schema.ts';

export interface TxnKey {
  userId: string;
  deviceId: string;
  /** The endpoint including anything that scopes the txn id, e.g. `sendToDevice/m.room_key`. */
  endpoint: string;
  txnId: string;
}

/** Persisted client transaction IDs: a retry of a claimed one has no new effect. */
export class TxnStore {
  constructor(private readonly db: Db) {}

  /**
   * Records the txn id inside the caller's transaction. Returns false when it was already
   * recorded; a concurrent duplicate waits on the unique key until the first one commits.
   */
  async claim(key: TxnKey): Promise<boolean> {
    const rows = await queryRows(this.db, txnClaimSql(sql`select ${key.userId}::text, ${key.deviceId}::text, ${key.endpoint}::text, ${key.txnId}::text`, Date.now(), false));
    return rows.length === 1;
  }

  /**
   * Whether a claim is on disk for certain: it was committed waiting for its flush (not lazily,
   * see LazyCommits). A retry that found its txn id claimed asks this (one index read) instead of
   * forcing a flush; false also when the claim is not visible yet.
   */
  async committedWithFlush(key: TxnKey): Promise<boolean> {
    const rows = await queryRows<{ lazy: boolean }>(
      this.db,
      sql`select lazy from txn_ids where user_id = ${key.userId} and device_id = ${key.deviceId} and endpoint = ${key.endpoint} and txn_id = ${key.txnId}`,
    );
    return rows[0]?.lazy === false;
  }

  async deleteOlderThan(ts: number): Promise<number> {
    const rows = await this.db.delete(txnIds).where(lt(txnIds.createdTs, ts)).returning({ txnId: txnIds.txnId });
    return rows.length;
  }
}

/**
 * The statement that claims txn ids, for the send statement and {@link TxnStore.claim}: inserts
 * the (user, device, endpoint, txn id) rows `source` selects (four text columns, in that order)
 * that are not there yet, returning those it inserted. `lazy` marks claims committed without
 * waiting for their flush (see LazyCommits): a retry of one of those must flush before it is
 * answered, a retry of any other finds its original on disk already.
 */
export function txnClaimSql(source: SQL, now: number | Placeholder, lazy: boolean): SQL {
  return sql`insert into txn_ids (user_id, device_id, endpoint, txn_id, response, created_ts, lazy)
          select s.u, s.d, s.e, s.t, '{}', ${now}, ${lazy} from (${source}) as s(u, d, e, t)
          on conflict do nothing
          returning user_id, device_id, endpoint, txn_id`;
}
