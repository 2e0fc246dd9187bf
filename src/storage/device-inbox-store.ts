import { and, asc, eq, gt, lt, lte, sql, type Placeholder, type SQL } from 'drizzle-orm';
import type { Db } from './drivers/database.ts';
import { queryRows } from '../shared/query-rows.ts';
import { deviceInbox } from './schema.ts';

export interface DeliveredMessage {
  streamId: number;
  sender: string;
  type: string;
  content: string;
}

/** A cancellation's key for one target device, or (`*`) for every device of the user (MSC3944). */
export interface RequestKey {
  userId: string;
  deviceId: string;
  requestingDeviceId: string;
  requestId: string;
}

/** Which devices of a user a request targets: all of them (`*`) or the listed ones. */
export type DeviceSelector = { userId: string; all: true } | { userId: string; all: false; deviceIds: string[] };

/** The per-device to-device queues. */
export class DeviceInboxStore {
  constructor(private readonly db: Db) {}

  /**
   * Locks the targeted devices that exist, in (user, device) order, as the send statement locks
   * them. For the transaction path: held while its send statements run, so that the locks of
   * all its sends are taken at once, in order.
   */
  async lockTargetDevices(selectors: readonly DeviceSelector[]): Promise<void> {
    const conditions: SQL[] = [];
    const allUsers = selectors.filter((s) => s.all).map((s) => s.userId);
    if (allUsers.length > 0) conditions.push(sql`dv.user_id in (select jsonb_array_elements_text(${JSON.stringify(allUsers)}::jsonb))`);
    const pairs = selectors.flatMap((s) => (s.all ? [] : s.deviceIds.map((d) => ({ u: s.userId, d }))));
    if (pairs.length > 0) {
      conditions.push(sql`(dv.user_id, dv.device_id) in (select t.u, t.d from jsonb_to_recordset(${JSON.stringify(pairs)}::jsonb) as t(u text, d text))`);
    }
    if (conditions.length === 0) return;
    await queryRows(this.db, sql`select dv.user_id from devices dv where ${sql.join(conditions, sql` or `)} order by dv.user_id, dv.device_id for update`);
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
  /** Which of these devices have messages queued (a parked long-poll's device has none it has not been given). */
  async devicesWithMessages(devices: readonly { userId: string; deviceId: string }[]): Promise<{ userId: string; deviceId: string }[]> {
    if (devices.length === 0) return [];
    const rows = await queryRows<{ u: string; d: string }>(
      this.db,
      sql`select w.u, w.d from jsonb_to_recordset(${JSON.stringify(devices.map((x) => ({ u: x.userId, d: x.deviceId })))}::jsonb) as w(u text, d text)
        where exists (select 1 from device_inbox i where i.user_id = w.u and i.device_id = w.d)`,
    );
    return rows.map((r) => ({ userId: r.u, deviceId: r.d }));
  }

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

  /**
   * MSC3944, the reading side: called before a response carrying some of the device's
   * `m.room_key_request` / `m.secret.request` messages is sent. Share-locks those rows, records
   * each `action: request` among them in `to_device_request_reads`, and answers which rows still
   * exist: a row a cancellation deleted meanwhile (its transaction committed after this sync read
   * the queue) must be left out of the response. One statement, so the record commits before
   * the locks go (see ToDeviceService's cancellation path for why that order matters).
   */
  async recordRequestsRead(userId: string, deviceId: string, streamIds: readonly number[]): Promise<Set<number>> {
    const rows = await queryRows<{ stream_id: string | number }>(
      this.db,
      sql`
        with kept as (
          select stream_id, sender, type, content::jsonb as c from device_inbox
          where user_id = ${userId} and device_id = ${deviceId}
            and stream_id in (select jsonb_array_elements_text(${JSON.stringify(streamIds)}::jsonb)::bigint)
          order by stream_id
          for share
        ),
        recorded as (
          insert into to_device_request_reads (user_id, device_id, sender, type, requesting_device_id, request_id, read_ts)
          select distinct ${userId}::text, ${deviceId}::text, k.sender, k.type, k.c->>'requesting_device_id', k.c->>'request_id', ${Date.now()}::bigint
          from kept k
          where k.c->>'action' = 'request' and k.c->>'requesting_device_id' is not null and k.c->>'request_id' is not null
          on conflict (user_id, device_id, sender, type, requesting_device_id, request_id) do update set read_ts = excluded.read_ts
        )
        select stream_id from kept
      `,
    );
    return new Set(rows.map((r) => Number(r.stream_id)));
  }

  /**
   * MSC3944, the cancelling side, step 1 (inside the transaction that holds the target devices'
   * row locks): locks and returns every queued message of `type` from `sender` whose
   * (requesting_device_id, request_id) is the key given for its device, oldest first. Waits for
   * any sync still recording one of them as read (recordRequestsRead's share locks).
   */
  async lockRequestsWithKeys(sender: string, type: string, keys: readonly RequestKey[]): Promise<(RequestKey & { streamId: number; action: string | null })[]> {
    if (keys.length === 0) return [];
    const rows = await queryRows<{ stream_id: string | number; user_id: string; device_id: string; rd: string; q: string; action: string | null }>(
      this.db,
      sql`
        select i.stream_id, i.user_id, i.device_id, k.rd, k.q, i.content::jsonb->>'action' as action
        from device_inbox i
        join jsonb_to_recordset(${JSON.stringify(keys.map((k) => ({ u: k.userId, d: k.deviceId, rd: k.requestingDeviceId, q: k.requestId })))}::jsonb)
          as k(u text, d text, rd text, q text) on i.user_id = k.u and (k.d = '*' or i.device_id = k.d)
        where i.sender = ${sender} and i.type = ${type}
          and i.content::jsonb->>'requesting_device_id' = k.rd and i.content::jsonb->>'request_id' = k.q
        order by i.stream_id
        for update of i
      `,
    );
    return rows.map((r) => ({ streamId: Number(r.stream_id), userId: r.user_id, deviceId: r.device_id, requestingDeviceId: r.rd, requestId: r.q, action: r.action }));
  }

  /**
   * MSC3944, step 2 (a statement of its own, so its snapshot is taken after step 1's locks):
   * deletes the records of the given keys and answers the keys that had one. Only for keys whose
   * cancellation is then stored, as it is for every key with a record.
   */
  async takeRequestReads(sender: string, type: string, keys: readonly RequestKey[]): Promise<RequestKey[]> {
    if (keys.length === 0) return [];
    const rows = await queryRows<{ user_id: string; device_id: string; requesting_device_id: string; request_id: string }>(
      this.db,
      sql`
        delete from to_device_request_reads r
        using jsonb_to_recordset(${JSON.stringify(keys.map((k) => ({ u: k.userId, d: k.deviceId, rd: k.requestingDeviceId, q: k.requestId })))}::jsonb)
          as k(u text, d text, rd text, q text)
        where r.user_id = k.u and (k.d = '*' or r.device_id = k.d) and r.sender = ${sender} and r.type = ${type}
          and r.requesting_device_id = k.rd and r.request_id = k.q
        returning r.user_id, r.device_id, r.requesting_device_id, r.request_id
      `,
    );
    return rows.map((r) => ({ userId: r.user_id, deviceId: r.device_id, requestingDeviceId: r.requesting_device_id, requestId: r.request_id }));
  }

  /** Deletes messages by stream id (MSC3944: requests whose cancellation arrived first). */
  async deleteByIds(streamIds: readonly number[]): Promise<number> {
    if (streamIds.length === 0) return 0;
    const rows = await queryRows<{ stream_id: string | number }>(
      this.db,
      sql`delete from device_inbox where stream_id in (select jsonb_array_elements_text(${JSON.stringify(streamIds)}::jsonb)::bigint) returning stream_id`,
    );
    return rows.length;
  }

  /**
   * Forgets the request records of devices that no longer exist, and those read before `ts`
   * whose key has no request still queued for the device (see stale-requests.ts).
   */
  async deleteRequestReadsBefore(ts: number): Promise<number> {
    const rows = await queryRows<{ n: string | number }>(
      this.db,
      sql`with gone as (
        delete from to_device_request_reads r
        where not exists (select 1 from devices dv where dv.user_id = r.user_id and dv.device_id = r.device_id)
          or (r.read_ts < ${ts} and not exists (
            select 1 from device_inbox i
            where i.user_id = r.user_id and i.device_id = r.device_id and i.sender = r.sender and i.type = r.type
              and i.content::jsonb->>'request_id' = r.request_id and i.content::jsonb->>'requesting_device_id' = r.requesting_device_id
          ))
        returning 1
      ) select count(*) as n from gone`,
    );
    return Number(rows[0]?.n ?? 0);
  }

  /** Drops undelivered messages received before `ts`. */
  async deleteReceivedBefore(ts: number): Promise<number> {
    const rows = await this.db.delete(deviceInbox).where(lt(deviceInbox.receivedTs, ts)).returning({ streamId: deviceInbox.streamId });
    return rows.length;
  }
}

/**
 * The statement that queues messages for local devices, for the send statement: inserts the
 * rows `source` selects — user id, device id, sender, type, content — drawing stream ids in the
 * order it selects them, and returns them with their ids. The devices' row locks must be held
 * (see the send statement): that is what keeps each device's ids in commit order.
 */
export function inboxInsertSql(source: SQL, now: number | Placeholder): SQL {
  return sql`insert into device_inbox (user_id, device_id, sender, type, content, received_ts)
          select s.u, s.d, s.s, s.t, s.c, ${now} from (${source}) as s(u, d, s, t, c)
          returning stream_id, user_id, device_id, sender, type, content`;
}
