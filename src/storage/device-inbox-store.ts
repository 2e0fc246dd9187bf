import { and, asc, eq, gt, inArray, lt, lte, or, sql, type SQL } from 'drizzle-orm';
import type { Db } from './database.ts';
import { queryRows } from './rows.ts';
import type { TxnKey } from './txn-store.ts';
import { deviceInbox, devices } from './schema.ts';

export interface InboxMessage {
  userId: string;
  deviceId: string;
  sender: string;
  type: string;
  /** JSON text of the content. */
  content: string;
}

export interface DeliveredMessage {
  streamId: number;
  sender: string;
  type: string;
  content: string;
}

/** One sendToDevice request's local part, for {@link DeviceInboxStore.claimAndEnqueueMany}. */
export interface EnqueueRequest {
  txn: TxnKey | null;
  sender: string;
  type: string;
  /** Device ID may be `*`; content is JSON text. */
  targets: readonly { userId: string; deviceId: string; content: string }[];
}

export interface EnqueueResult {
  /** False when the txn id was already used: nothing was stored. */
  claimed: boolean;
  stored: { userId: string; deviceId: string }[];
  knownUsers: Set<string>;
}

/** Which devices of a user a request targets: all of them (`*`) or the listed ones. */
export type DeviceSelector = { userId: string; all: true } | { userId: string; all: false; deviceIds: string[] };

// Postgres caps a statement at 65,535 parameters; six per row leaves ample room.
const INSERT_CHUNK = 5000;

/** The per-device to-device queues. */
export class DeviceInboxStore {
  constructor(private readonly db: Db) {}

  /**
   * Locks the targeted devices that exist, in (user, device) order, and returns them. Must run
   * inside the transaction that then inserts: holding these locks while stream ids are drawn is
   * what keeps per-device ids in commit order.
   */
  async lockTargetDevices(selectors: readonly DeviceSelector[]): Promise<{ userId: string; deviceId: string }[]> {
    if (selectors.length === 0) return [];
    const conditions: SQL[] = [];
    const allUsers = selectors.filter((s) => s.all).map((s) => s.userId);
    if (allUsers.length > 0) conditions.push(inArray(devices.userId, allUsers));
    for (const s of selectors) {
      if (!s.all && s.deviceIds.length > 0) {
        conditions.push(and(eq(devices.userId, s.userId), inArray(devices.deviceId, s.deviceIds)) as SQL);
      }
    }
    if (conditions.length === 0) return [];
    return this.db
      .select({ userId: devices.userId, deviceId: devices.deviceId })
      .from(devices)
      .where(conditions.length === 1 ? conditions[0] : or(...conditions))
      .orderBy(asc(devices.userId), asc(devices.deviceId))
      .for('update');
  }

  /** Inserts in order and returns each message's stream id, in the same order. */
  async insert(messages: readonly InboxMessage[]): Promise<number[]> {
    const now = Date.now();
    const ids: number[] = [];
    for (let i = 0; i < messages.length; i += INSERT_CHUNK) {
      const chunk = messages.slice(i, i + INSERT_CHUNK).map((m) => ({ ...m, receivedTs: now }));
      const rows = await this.db.insert(deviceInbox).values(chunk).returning({ streamId: deviceInbox.streamId });
      // Ids come from the sequence in row order; sort rather than trust RETURNING's order.
      ids.push(...rows.map((r) => r.streamId).sort((a, b) => a - b));
    }
    return ids;
  }

  /**
   * The common case for many requests in one statement, so one round trip and one take of the
   * device row locks for a whole batch: claims each request's txn id (if any) and, for the
   * requests whose claim succeeded, locks the target devices in (user, device) order and inserts
   * one message per existing target, `*` expanded, in request order. Txn ids within one call must
   * be distinct. Answers, per request, whether its txn id was new, which devices got a message,
   * and which of its target users exist.
   */
  async claimAndEnqueueMany(requests: readonly EnqueueRequest[]): Promise<EnqueueResult[]> {
    const now = Date.now();
    const reqs = JSON.stringify(
      requests.map((q, r) => ({ r, tu: q.txn?.userId ?? null, td: q.txn?.deviceId, te: q.txn?.endpoint, tt: q.txn?.txnId, s: q.sender, t: q.type })),
    );
    const targets = JSON.stringify(requests.flatMap((q, r) => q.targets.map((t, o) => ({ r, u: t.userId, d: t.deviceId, c: t.content, o }))));
    const rows = await queryRows<{ k: string; r: number | null; u: string | null; d: string | null }>(
      this.db,
      sql`
        with req as (
          select * from jsonb_to_recordset(${reqs}::jsonb) as q(r int, tu text, td text, te text, tt text, s text, t text)
        ),
        claim as (
          insert into txn_ids (user_id, device_id, endpoint, txn_id, response, created_ts)
          select q.tu, q.td, q.te, q.tt, '{}', ${now} from req q where q.tu is not null
          on conflict do nothing
          returning user_id, device_id, endpoint, txn_id
        ),
        ok as (
          select q.r, q.s, q.t from req q where q.tu is null
          union all
          select q.r, q.s, q.t from req q
          join claim c on c.user_id = q.tu and c.device_id = q.td and c.endpoint = q.te and c.txn_id = q.tt
        ),
        tgt as (
          select * from jsonb_to_recordset(${targets}::jsonb) as x(r int, u text, d text, c text, o int)
        ),
        expanded as (
          select x.r, x.u, x.d, x.c, x.o from tgt x join ok on ok.r = x.r where x.d <> '*'
          union all
          select x.r, x.u, dv.device_id as d, x.c, x.o from tgt x join ok on ok.r = x.r
          join devices dv on dv.user_id = x.u where x.d = '*'
        ),
        locked as (
          select dv.user_id, dv.device_id from devices dv
          where (dv.user_id, dv.device_id) in (select u, d from expanded)
          order by dv.user_id, dv.device_id
          for update
        ),
        ins as (
          insert into device_inbox (user_id, device_id, sender, type, content, received_ts)
          select e.u, e.d, ok.s, ok.t, e.c, ${now}
          from expanded e join ok on ok.r = e.r join locked l on l.user_id = e.u and l.device_id = e.d
          order by e.r, e.o, e.u, e.d
          returning 1
        )
        select 'claimed' as k, ok.r, null::text as u, null::text as d from ok
        union all
        select 'stored', e.r, e.u, e.d from expanded e join locked l on l.user_id = e.u and l.device_id = e.d
        union all
        select distinct 'known', null::int, dv.user_id, null::text from devices dv where dv.user_id in (select u from tgt)
      `,
    );
    const results: EnqueueResult[] = requests.map(() => ({ claimed: false, stored: [], knownUsers: new Set<string>() }));
    const known = new Set<string>();
    for (const row of rows) {
      if (row.k === 'known') known.add(row.u ?? '');
      else {
        const result = results[Number(row.r)];
        if (result === undefined) continue;
        if (row.k === 'claimed') result.claimed = true;
        else result.stored.push({ userId: row.u ?? '', deviceId: row.d ?? '' });
      }
    }
    requests.forEach((q, i) => {
      const result = results[i] as EnqueueResult;
      for (const t of q.targets) if (known.has(t.userId)) result.knownUsers.add(t.userId);
    });
    return results;
  }

  /** Acknowledges everything up to and including `streamId` for one device. */
  async deleteUpTo(userId: string, deviceId: string, streamId: number): Promise<number> {
    const deleted = await this.db
      .delete(deviceInbox)
      .where(and(eq(deviceInbox.userId, userId), eq(deviceInbox.deviceId, deviceId), lte(deviceInbox.streamId, streamId)))
      .returning({ streamId: deviceInbox.streamId });
    return deleted.length;
  }

  /** The oldest `limit` messages after `afterStreamId` (exclusive), in arrival order. */
  async fetch(userId: string, deviceId: string, afterStreamId: number, limit: number): Promise<DeliveredMessage[]> {
    return this.db
      .select({
        streamId: deviceInbox.streamId,
        sender: deviceInbox.sender,
        type: deviceInbox.type,
        content: deviceInbox.content,
      })
      .from(deviceInbox)
      .where(and(eq(deviceInbox.userId, userId), eq(deviceInbox.deviceId, deviceId), gt(deviceInbox.streamId, afterStreamId)))
      .orderBy(asc(deviceInbox.streamId))
      .limit(limit);
  }

  /**
   * One round trip for the start of a sync: acknowledges up to `since` (unless `since` is beyond
   * any id ever drawn — a restored database, a forged token — which acknowledges nothing) and
   * reads the oldest `limit` messages after it. `after` is the position the read started from.
   */
  async ackAndFetch(userId: string, deviceId: string, since: number, limit: number): Promise<{ after: number; rows: DeliveredMessage[] }> {
    const rows = await queryRows<{ after: string | number; stream_id: string | number | null; sender: string; type: string; content: string }>(
      this.db,
      sql`
        with horizon as (
          select case when is_called then last_value else 0 end as max_id from device_inbox_stream_id_seq
        ),
        start as (
          select case when ${since}::bigint <= h.max_id then ${since}::bigint else 0 end as after from horizon h
        ),
        ack as (
          delete from device_inbox
          where user_id = ${userId} and device_id = ${deviceId} and stream_id <= (select after from start)
        )
        select s.after, m.stream_id, m.sender, m.type, m.content
        from start s
        left join lateral (
          select stream_id, sender, type, content from device_inbox
          where user_id = ${userId} and device_id = ${deviceId} and stream_id > s.after
          order by stream_id
          limit ${limit}
        ) m on true
        order by m.stream_id
      `,
    );
    const after = Number(rows[0]?.after ?? 0);
    return {
      after,
      rows: rows
        .filter((r) => r.stream_id !== null)
        .map((r) => ({ streamId: Number(r.stream_id), sender: r.sender, type: r.type, content: r.content })),
    };
  }

  /**
   * Enforces the per-device cap: for each device over `max` messages, deletes its oldest
   * beyond the cap. Returns how many were dropped.
   */
  async trimQueuesOver(max: number): Promise<number> {
    const over = await this.db
      .select({ userId: deviceInbox.userId, deviceId: deviceInbox.deviceId, n: sql<number>`count(*)::int` })
      .from(deviceInbox)
      .groupBy(deviceInbox.userId, deviceInbox.deviceId)
      .having(sql`count(*) > ${max}`);
    let dropped = 0;
    for (const d of over) {
      const excess = Number(d.n) - max;
      // The newest of the messages to drop: everything up to it goes.
      const cutoff = await this.db
        .select({ streamId: deviceInbox.streamId })
        .from(deviceInbox)
        .where(and(eq(deviceInbox.userId, d.userId), eq(deviceInbox.deviceId, d.deviceId)))
        .orderBy(asc(deviceInbox.streamId))
        .offset(excess - 1)
        .limit(1);
      const upTo = cutoff[0]?.streamId;
      if (upTo !== undefined) dropped += await this.deleteUpTo(d.userId, d.deviceId, upTo);
    }
    return dropped;
  }

  /** Drops undelivered messages received before `ts`. */
  async deleteReceivedBefore(ts: number): Promise<number> {
    const rows = await this.db.delete(deviceInbox).where(lt(deviceInbox.receivedTs, ts)).returning({ streamId: deviceInbox.streamId });
    return rows.length;
  }
}
