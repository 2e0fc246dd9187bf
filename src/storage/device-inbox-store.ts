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
   * The common case in one statement, so one round trip and the shortest possible hold of the
   * device row locks: claims the txn id (if any) and, only if that succeeded, locks the target
   * devices in (user, device) order and inserts one message per existing target, `*` expanded.
   * Returns whether the txn id was new and which devices got a message.
   */
  async claimAndEnqueue(opts: {
    txn: TxnKey | null;
    sender: string;
    type: string;
    targets: readonly { userId: string; deviceId: string; content: string }[];
  }): Promise<{ claimed: boolean; stored: { userId: string; deviceId: string }[]; knownUsers: Set<string> }> {
    const now = Date.now();
    const hasTxn = opts.txn !== null;
    const txn = opts.txn ?? { userId: '', deviceId: '', endpoint: '', txnId: '' };
    const targets = JSON.stringify(opts.targets.map((t, o) => ({ u: t.userId, d: t.deviceId, c: t.content, o })));
    const rows = await queryRows<{ claimed: number; stored: string | { u: string; d: string }[] | null; known: string | string[] | null }>(
      this.db,
      sql`
        with claim as (
          insert into txn_ids (user_id, device_id, endpoint, txn_id, response, created_ts)
          select ${txn.userId}, ${txn.deviceId}, ${txn.endpoint}, ${txn.txnId}, '{}', ${now}
          where ${hasTxn}
          on conflict do nothing
          returning 1
        ),
        req as (
          select * from jsonb_to_recordset(${targets}::jsonb) as r(u text, d text, c text, o int)
        ),
        expanded as (
          select r.u, r.d, r.c, r.o from req r where r.d <> '*'
          union all
          select r.u, dv.device_id as d, r.c, r.o from req r join devices dv on dv.user_id = r.u where r.d = '*'
        ),
        locked as (
          select dv.user_id, dv.device_id from devices dv
          where (not ${hasTxn} or exists (select 1 from claim))
            and (dv.user_id, dv.device_id) in (select u, d from expanded)
          order by dv.user_id, dv.device_id
          for update
        ),
        ins as (
          insert into device_inbox (user_id, device_id, sender, type, content, received_ts)
          select e.u, e.d, ${opts.sender}, ${opts.type}, e.c, ${now}
          from expanded e join locked l on l.user_id = e.u and l.device_id = e.d
          order by e.o, e.u, e.d
          returning user_id, device_id
        )
        select (select count(*) from claim)::int as claimed,
               (select json_agg(json_build_object('u', user_id, 'd', device_id)) from ins) as stored,
               (select json_agg(distinct dv.user_id) from devices dv where dv.user_id in (select u from req)) as known
      `,
    );
    const row = rows[0];
    const stored = row?.stored ?? null;
    const list = (typeof stored === 'string' ? (JSON.parse(stored) as { u: string; d: string }[]) : stored) ?? [];
    const known = row?.known ?? null;
    const knownUsers = new Set((typeof known === 'string' ? (JSON.parse(known) as string[]) : known) ?? []);
    return { claimed: !hasTxn || Number(row?.claimed ?? 0) === 1, stored: list.map((s) => ({ userId: s.u, deviceId: s.d })), knownUsers };
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
