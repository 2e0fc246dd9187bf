import { sql, type SQL } from 'drizzle-orm';
import type { Db } from './drivers/database.ts';
import { queryRows } from '../shared/query-rows.ts';
import { appservicePendingTxns, appserviceQueue } from './schema.ts';

export interface AppserviceMessage {
  appserviceId: string;
  inboxStreamId: number | null;
  exclusive: boolean;
  type: string;
  sender: string;
  content: string;
  toUserId: string;
  toDeviceId: string;
}

export interface QueuedAppserviceMessage extends AppserviceMessage {
  streamId: number;
}

export interface AppservicePendingTxn {
  appserviceId: string;
  txnId: string;
  body: string;
  queueIds: number[];
  inboxIds: number[];
}

/** Durable per-appservice queues of to-device messages (MSC4203). */
export class AppserviceQueueStore {
  constructor(private readonly db: Db) {}

  async appservicesWithWork(): Promise<string[]> {
    const queued = await this.db.selectDistinct({ id: appserviceQueue.appserviceId }).from(appserviceQueue);
    const pending = await this.db.select({ id: appservicePendingTxns.appserviceId }).from(appservicePendingTxns);
    return [...new Set([...queued, ...pending].map((r) => r.id))];
  }

  /**
   * One step of an appservice's queue, in one statement (one round trip, one commit): completes
   * `acknowledged` — the transaction the appservice has just answered 2xx: it goes with its
   * queue rows and the exclusive ones' inbox rows — and returns the transaction to push next.
   * That is the pending one if another is stored (a retry repeats its txnId and body), else a new
   * one of up to `limit` of the oldest queued rows, stored under `newTxnId` before it is
   * returned; null when the queue is empty.
   *
   * The body is built here so it can be stored in the same statement: `content` is spliced in as
   * the JSON text it was stored as.
   */
  async advance(appserviceId: string, acknowledged: string | null, newTxnId: string, limit: number): Promise<AppservicePendingTxn | null> {
    const now = Date.now();
    const rows = await queryRows<{ txn_id: string; body: string; queue_ids: string; inbox_ids: string }>(
      this.db,
      sql`
        with cur as (select txn_id, queue_ids, inbox_ids from appservice_pending_txns where appservice_id = ${appserviceId}),
        done as (select queue_ids, inbox_ids from cur where txn_id = ${acknowledged}::text),
        retry as (
          select txn_id, body, queue_ids, inbox_ids from appservice_pending_txns
          where appservice_id = ${appserviceId} and txn_id is distinct from ${acknowledged}::text
        ),
        dq as (delete from appservice_queue where stream_id in (select jsonb_array_elements_text(queue_ids::jsonb)::bigint from done)),
        di as (delete from device_inbox where stream_id in (select jsonb_array_elements_text(inbox_ids::jsonb)::bigint from done)),
        q as (
          select stream_id, inbox_stream_id, exclusive, type, sender, content, to_user_id, to_device_id from appservice_queue
          where appservice_id = ${appserviceId}
            and not exists (select 1 from retry)
            and stream_id not in (select jsonb_array_elements_text(queue_ids::jsonb)::bigint from done)
          order by stream_id
          limit ${limit}
        ),
        agg as (
          select
            json_agg(json_build_object('type', type, 'sender', sender, 'content', content::json, 'to_user_id', to_user_id, 'to_device_id', to_device_id) order by stream_id)::text as td,
            json_agg(stream_id order by stream_id)::text as qids,
            coalesce(json_agg(inbox_stream_id order by stream_id) filter (where exclusive and inbox_stream_id is not null), '[]'::json)::text as iids
          from q
        ),
        nxt as (
          -- The stable key (MSC4203) and the one Synapse sends and matrix-bot-sdk reads.
          select '{"events":[],"to_device":' || td || ',"de.sorunome.msc2409.to_device":' || td || '}' as body, qids, iids
          from agg where td is not null
        ),
        upd as (
          update appservice_pending_txns t set txn_id = ${newTxnId}, body = nxt.body, queue_ids = nxt.qids, inbox_ids = nxt.iids, created_ts = ${now}
          from nxt where t.appservice_id = ${appserviceId} and t.txn_id = ${acknowledged}::text
          returning t.txn_id, t.body, t.queue_ids, t.inbox_ids
        ),
        del as (
          delete from appservice_pending_txns
          where appservice_id = ${appserviceId} and txn_id = ${acknowledged}::text and not exists (select 1 from nxt)
        ),
        ins as (
          insert into appservice_pending_txns (appservice_id, txn_id, body, queue_ids, inbox_ids, created_ts)
          select ${appserviceId}, ${newTxnId}, body, qids, iids, ${now} from nxt where not exists (select 1 from cur)
          returning txn_id, body, queue_ids, inbox_ids
        )
        select txn_id, body, queue_ids, inbox_ids from retry
        union all select txn_id, body, queue_ids, inbox_ids from upd
        union all select txn_id, body, queue_ids, inbox_ids from ins`,
    );
    const row = rows[0];
    if (row === undefined) return null;
    return {
      appserviceId,
      txnId: row.txn_id,
      body: row.body,
      queueIds: JSON.parse(row.queue_ids) as number[],
      inboxIds: JSON.parse(row.inbox_ids) as number[],
    };
  }

  /**
   * Completes an acknowledged transaction on its own (at shutdown; a running sender completes in
   * {@link advance}): it goes with its queue rows and the exclusive ones' inbox rows. Keyed by txn
   * id too, so it cannot complete a transaction another process put in its place.
   */
  async completePendingTxn(appserviceId: string, txnId: string): Promise<void> {
    await this.db.execute(sql`
      with t as (
        delete from appservice_pending_txns where appservice_id = ${appserviceId} and txn_id = ${txnId}
        returning queue_ids, inbox_ids
      ),
      q as (delete from appservice_queue where stream_id in (select jsonb_array_elements_text(t.queue_ids::jsonb)::bigint from t)),
      i as (delete from device_inbox where stream_id in (select jsonb_array_elements_text(t.inbox_ids::jsonb)::bigint from t))
      select 1`);
  }
}

/**
 * The statement that queues copies for appservices (MSC4203), for the send statement: inserts
 * the rows `source` selects — appservice id, inbox stream id (of the stored copy the appservice
 * acknowledges for an exclusive user; null when none), exclusive, type, sender, content, user
 * id, device id — in the order it selects them.
 */
export function appserviceQueueInsertSql(source: SQL, now: number): SQL {
  return sql`insert into appservice_queue (appservice_id, inbox_stream_id, exclusive, type, sender, content, to_user_id, to_device_id, created_ts)
          select s.a, s.i, s.x, s.t, s.s, s.c, s.u, s.d, ${now} from (${source}) as s(a, i, x, t, s, c, u, d)
          returning appservice_id`;
}
