import { and, asc, eq, gt, lt, lte, sql, type SQL } from 'drizzle-orm';
import type { Db } from './database.ts';
import type { LazyCommits } from './lazy-commits.ts';
import { queryRows } from '../shared/query-rows.ts';
import { NewMessages } from './new-messages.ts';
import type { TxnKey } from './txn-store.ts';
import { deviceInbox } from './schema.ts';

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

/** One sendToDevice request (or one federation EDU), for {@link DeviceInboxStore.claimAndEnqueueMany}. */
export interface EnqueueRequest {
  txn: TxnKey | null;
  /** A federation EDU's (origin, message_id): applied once, like a txn id. */
  inbound?: { origin: string; messageId: string } | null;
  sender: string;
  type: string;
  /** Local devices; device ID may be `*`; content is JSON text. */
  targets: readonly { userId: string; deviceId: string; content: string }[];
  /** Messages for remote users, queued for federation in the same statement. */
  remote?: readonly { destination: string; userId: string; deviceId: string; content: string }[];
  /** Appservices owed a copy of what is stored for these target users (MSC4203). */
  appservices?: readonly { userId: string; appserviceId: string; exclusive: boolean }[];
  /** Targeted devices with a long-poll waiting in this process: the ones to report NewMessages for. */
  watch?: readonly Watched[];
}

/** A device whose NewMessages are wanted (see `inbox_newest_after_lock`, migration 0006). */
export interface Watched {
  userId: string;
  deviceId: string;
}

export interface EnqueueResult {
  /** False when the txn id was already used: nothing was stored. */
  claimed: boolean;
  /**
   * Each device that got a message, with what the whole batch stored for that device: requests
   * of one batch that reach the same device share one NewMessages, so whichever wakes the device
   * first hands over all of it.
   */
  stored: { userId: string; deviceId: string; news: NewMessages | undefined }[];
  knownUsers: Set<string>;
  /** The appservices this request queued copies for. */
  appservicesQueued: string[];
  /**
   * Set when the statement stored only claims and committed without waiting for its flush
   * (a store with {@link LazyCommits}): pass it to `makeDurable` before answering.
   */
  lazyMark?: number | undefined;
  /** Targets (`user\u0000device`) whose cancellation was not stored, with the request it cancelled (MSC3944). */
  staleDropped?: Set<string>;
  /** How many messages MSC3944 removed: those requests, and those cancellations. */
  staleCount?: number;
}

/** A targeted device, locked; if watched, with the newest message it had queued once the lock was taken (0: none). */
export interface LockedDevice {
  userId: string;
  deviceId: string;
  newestStreamId: number | null;
}

/** A cancellation's key for one target device (MSC3944). */
export interface RequestKey {
  userId: string;
  deviceId: string;
  requestingDeviceId: string;
  requestId: string;
}

/** Which devices of a user a request targets: all of them (`*`) or the listed ones. */
export type DeviceSelector = { userId: string; all: true } | { userId: string; all: false; deviceIds: string[] };

// Postgres caps a statement at 65,535 parameters; six per row leaves ample room.
const INSERT_CHUNK = 5000;

/** The per-device to-device queues. */
export class DeviceInboxStore {
  constructor(
    private readonly db: Db,
    /** With it, statements that store only claims commit lazily (see {@link LazyCommits}). */
    private readonly lazy?: LazyCommits,
  ) {}

  /**
   * Locks the targeted devices that exist, in (user, device) order, and returns them. Must run
   * inside the transaction that then inserts: holding these locks while stream ids are drawn is
   * what keeps per-device ids in commit order. Watched devices come with the newest message they
   * had queued once locked (see `inbox_newest_after_lock`, migration 0006).
   */
  async lockTargetDevices(selectors: readonly DeviceSelector[], watch: readonly Watched[] = []): Promise<LockedDevice[]> {
    if (selectors.length === 0) return [];
    const conditions: SQL[] = [];
    const allUsers = selectors.filter((s) => s.all).map((s) => s.userId);
    if (allUsers.length > 0) conditions.push(sql`dv.user_id in (select jsonb_array_elements_text(${JSON.stringify(allUsers)}::jsonb))`);
    const pairs = selectors.flatMap((s) => (s.all ? [] : s.deviceIds.map((d) => ({ u: s.userId, d }))));
    if (pairs.length > 0) {
      conditions.push(sql`(dv.user_id, dv.device_id) in (select t.u, t.d from jsonb_to_recordset(${JSON.stringify(pairs)}::jsonb) as t(u text, d text))`);
    }
    if (conditions.length === 0) return [];
    const rows = await queryRows<{ user_id: string; device_id: string; newest_stream_id: string | number | null }>(
      this.db,
      sql`
        with locked as (
          select dv.user_id, dv.device_id from devices dv
          where ${sql.join(conditions, sql` or `)}
          order by dv.user_id, dv.device_id
          for update
        ),
        ${newestAfterLock(watch)}
        select l.user_id, l.device_id, null::bigint as newest_stream_id from locked l
        union all
        select n.user_id, n.device_id, n.newest_stream_id from newest n
      `,
    );
    // Joined here rather than in SQL: the planner cannot size CTEs, and joining them in
    // claimAndEnqueueMany's statement made a nested loop that took 90 ms for 1,000 devices.
    const newest = new Map<string, number>();
    for (const r of rows) if (r.newest_stream_id !== null) newest.set(`${r.user_id}\u0000${r.device_id}`, Number(r.newest_stream_id));
    return rows
      .filter((r) => r.newest_stream_id === null)
      .map((r) => ({ userId: r.user_id, deviceId: r.device_id, newestStreamId: newest.get(`${r.user_id}\u0000${r.device_id}`) ?? null }));
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
   * be distinct. Answers, per request, whether its txn id was new, which devices got a message
   * (with what the batch stored for each), and which of its target users exist.
   */
  async claimAndEnqueueMany(requests: readonly EnqueueRequest[]): Promise<EnqueueResult[]> {
    if (requests.every((q) => q.targets.length === 0 && (q.remote?.length ?? 0) === 0 && (q.appservices?.length ?? 0) === 0 && q.inbound == null)) {
      return this.claimTxnIds(requests);
    }
    const now = Date.now();
    const reqs = JSON.stringify(
      requests.map((q, r) => ({
        r,
        tu: q.txn?.userId ?? null,
        td: q.txn?.deviceId,
        te: q.txn?.endpoint,
        tt: q.txn?.txnId,
        io: q.inbound?.origin ?? null,
        im: q.inbound?.messageId,
        s: q.sender,
        t: q.type,
      })),
    );
    const targets = JSON.stringify(requests.flatMap((q, r) => q.targets.map((t, o) => ({ r, u: t.userId, d: t.deviceId, c: t.content, o }))));
    const remote = requests.flatMap((q, r) => (q.remote ?? []).map((m, o) => ({ r, x: m.destination, u: m.userId, d: m.deviceId, c: m.content, o })));
    const owed = new Map<string, { u: string; a: string; x: boolean }>();
    for (const q of requests) for (const a of q.appservices ?? []) owed.set(`${a.userId}\u0000${a.appserviceId}`, { u: a.userId, a: a.appserviceId, x: a.exclusive });
    const watch = requests.flatMap((q) => q.watch ?? []);
    const inbound = requests.some((q) => q.inbound != null);
    const head = sql`
        with req as (
          select * from jsonb_to_recordset(${reqs}::jsonb) as q(r int, tu text, td text, te text, tt text, io text, im text, s text, t text)
        ),
        claim as (
          insert into txn_ids (user_id, device_id, endpoint, txn_id, response, created_ts)
          select q.tu, q.td, q.te, q.tt, '{}', ${now} from req q where q.tu is not null
          on conflict do nothing
          returning user_id, device_id, endpoint, txn_id
        ),
        ${
          inbound
            ? sql`claim_edu as (
          insert into federation_inbound_messages (origin, message_id, received_ts)
          select q.io, q.im, ${now} from req q where q.io is not null
          on conflict do nothing
          returning origin, message_id
        ),`
            : sql``
        }
        ok as (
          select q.r, q.s, q.t from req q where q.tu is null and q.io is null
          union all
          select q.r, q.s, q.t from req q
          join claim c on c.user_id = q.tu and c.device_id = q.td and c.endpoint = q.te and c.txn_id = q.tt
          ${
            inbound
              ? sql`union all
          select q.r, q.s, q.t from req q join claim_edu c on c.origin = q.io and c.message_id = q.im`
              : sql``
          }
        )`;
    const claimsOnly = targets === '[]' && remote.length === 0 && owed.size === 0;
    const lazy = claimsOnly ? this.lazy : undefined;
    const flushed = lazy === undefined ? this.lazy?.flushedCommit() : undefined;
    const rows = await queryRows<{ k: string; r: number | null; o: number | null; u: string | null; d: string | null; n: string | number | null }>(
      this.db,
      claimsOnly
        ? // Only claims, a federation EDU's among them (sends to the server user alone; client
          // claims alone go to claimTxnIds): none of the storing CTEs. With lazy commits, this
          // transaction's commit does not wait for its flush; the 'lazy' row is what makes the
          // CTE run whether or not anything was claimed.
          sql`${head}${
            lazy === undefined
              ? sql``
              : sql`,
        lazy as (select set_config('synchronous_commit', 'off', true) as v)`
          }
        select 'claimed' as k, ok.r, null::int as o, null::text as u, null::text as d, null::bigint as n from ok
        ${lazy === undefined ? sql`` : sql`union all select 'lazy', null, null, null, null, null from lazy`}`
        : sql`${head},
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
        ${newestAfterLock(watch)},
        ins as (
          insert into device_inbox (user_id, device_id, sender, type, content, received_ts)
          select e.u, e.d, ok.s, ok.t, e.c, ${now}
          from expanded e join ok on ok.r = e.r join locked l on l.user_id = e.u and l.device_id = e.d
          order by e.r, e.o, e.u, e.d
          returning stream_id, user_id, device_id, sender, type, content
        )
        ${
          remote.length === 0
            ? sql``
            : sql`,
        outbox as (
          insert into federation_outbox (destination, sender, type, user_id, device_id, content, created_ts)
          select m.x, ok.s, ok.t, m.u, m.d, m.c, ${now}
          from jsonb_to_recordset(${JSON.stringify(remote)}::jsonb) as m(r int, x text, u text, d text, c text, o int)
          join ok on ok.r = m.r
          order by m.r, m.o
          returning 1
        )`
        }
        ${
          owed.size === 0
            ? sql``
            : sql`,
        owed as (
          insert into appservice_queue (appservice_id, inbox_stream_id, exclusive, type, sender, content, to_user_id, to_device_id, created_ts)
          select a.a, i.stream_id, a.x, i.type, i.sender, i.content, i.user_id, i.device_id, ${now}
          from ins i join jsonb_to_recordset(${JSON.stringify([...owed.values()])}::jsonb) as a(u text, a text, x boolean) on a.u = i.user_id
          order by i.stream_id, a.a
          returning appservice_id
        )`
        }
        select 'claimed' as k, ok.r, null::int as o, null::text as u, null::text as d, null::bigint as n from ok
        union all
        select 'stored', e.r, e.o, e.u, e.d, null from expanded e join locked l on l.user_id = e.u and l.device_id = e.d
        union all
        -- The watched devices' newest older messages, then their new ids. In this order: reading
        -- ins makes it insert, and the function's snapshot would see rows inserted before it.
        select 'newest', null, null, n.user_id, n.device_id, n.newest_stream_id from newest n
        ${
          watch.length === 0
            ? sql``
            : sql`union all
        select 'id', null, null, i.user_id, i.device_id, i.stream_id from ins i
        where (i.user_id, i.device_id) in (select n.user_id, n.device_id from newest n)`
        }
        ${owed.size === 0 ? sql`` : sql`union all select distinct 'appservice', null::int, null::int, w.appservice_id, null::text, null::bigint from owed w`}
        union all
        select distinct 'known', null::int, null::int, dv.user_id, null::text, null::bigint from devices dv where dv.user_id in (select u from tgt)
      `,
    );
    flushed?.();
    const lazyMark = lazy?.mark();
    const results: EnqueueResult[] = requests.map(() => ({ claimed: false, stored: [], knownUsers: new Set<string>(), appservicesQueued: [], lazyMark }));
    const known = new Set<string>();
    const queuedFor = new Set<string>();
    // Per device: its newest queued message before this batch, its messages' (request, target) positions, their ids.
    const perDevice = new Map<string, { previousId: number | null; at: [number, number][]; ids: number[] }>();
    const deviceOf = (u: string | null, d: string | null) => {
      const key = `${u ?? ''}\u0000${d ?? ''}`;
      let entry = perDevice.get(key);
      if (entry === undefined) perDevice.set(key, (entry = { previousId: null, at: [], ids: [] }));
      return entry;
    };
    const storedRows: { r: number; u: string; d: string }[] = [];
    for (const row of rows) {
      if (row.k === 'lazy') continue;
      if (row.k === 'known') known.add(row.u ?? '');
      else if (row.k === 'appservice') queuedFor.add(row.u ?? '');
      else if (row.k === 'id') deviceOf(row.u, row.d).ids.push(Number(row.n));
      else if (row.k === 'newest') deviceOf(row.u, row.d).previousId = Number(row.n);
      else if (row.k === 'claimed') {
        const result = results[Number(row.r)];
        if (result !== undefined) result.claimed = true;
      } else {
        // Positions matter only for watched devices' news; S1's batches of 500 watch nothing.
        if (watch.length > 0) deviceOf(row.u, row.d).at.push([Number(row.r), Number(row.o)]);
        storedRows.push({ r: Number(row.r), u: row.u ?? '', d: row.d ?? '' });
      }
    }
    const news = new Map<string, NewMessages>();
    for (const [key, { previousId, at, ids }] of perDevice) {
      // Not watched, or (never expected) the same rows counted differently: the device's polls read.
      if (previousId === null || at.length !== ids.length) continue;
      // Ids were drawn in (request, target) order: both sorted, they pair up.
      at.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      ids.sort((a, b) => a - b);
      const messages = at.map(([r, o], i) => {
        const q = requests[r] as EnqueueRequest;
        return { streamId: ids[i] as number, sender: q.sender, type: q.type, content: q.targets[o]?.content ?? '' };
      });
      news.set(key, new NewMessages(previousId, messages));
    }
    for (const { r, u, d } of storedRows) {
      results[r]?.stored.push({ userId: u, deviceId: d, news: news.get(`${u}\u0000${d}`) });
    }
    requests.forEach((q, i) => {
      const result = results[i] as EnqueueResult;
      for (const t of q.targets) if (known.has(t.userId)) result.knownUsers.add(t.userId);
      result.appservicesQueued = [...new Set((q.appservices ?? []).map((a) => a.appserviceId))].filter((id) => queuedFor.has(id));
    });
    return results;
  }

  /**
   * A batch that stores nothing but txn ids (sends to the server user alone, from clients):
   * just the claims, lazily committed when the store has {@link LazyCommits}. The general
   * statement's CTEs cost a PGlite ping 295 µs here against 168 µs for this (in process).
   */
  private async claimTxnIds(requests: readonly EnqueueRequest[]): Promise<EnqueueResult[]> {
    const lazy = this.lazy;
    const keys = requests.flatMap((q) => (q.txn === null ? [] : [{ u: q.txn.userId, d: q.txn.deviceId, e: q.txn.endpoint, t: q.txn.txnId }]));
    // Nothing to write, so nothing to commit or make durable.
    if (keys.length === 0) return requests.map(() => ({ claimed: true, stored: [], knownUsers: new Set<string>(), appservicesQueued: [] }));
    const txns = JSON.stringify(keys);
    const rows = await queryRows<{ k: string; u: string | null; d: string | null; e: string | null; t: string | null }>(
      this.db,
      sql`with ${
        lazy === undefined
          ? sql``
          : // This transaction's commit does not wait for its flush; the 'lazy' row below is what
            // makes the CTE run whether or not anything was claimed.
            sql`lazy as (select set_config('synchronous_commit', 'off', true) as v),`
      }
        claim as (
          insert into txn_ids (user_id, device_id, endpoint, txn_id, response, created_ts)
          select q.u, q.d, q.e, q.t, '{}', ${Date.now()} from jsonb_to_recordset(${txns}::jsonb) as q(u text, d text, e text, t text)
          on conflict do nothing
          returning user_id, device_id, endpoint, txn_id
        )
        select 'claimed' as k, c.user_id as u, c.device_id as d, c.endpoint as e, c.txn_id as t from claim c
        ${lazy === undefined ? sql`` : sql`union all select 'lazy', null, null, null, null from lazy`}`,
    );
    const lazyMark = lazy?.mark();
    const claimed = new Set(rows.filter((r) => r.k === 'claimed').map((r) => JSON.stringify([r.u, r.d, r.e, r.t])));
    return requests.map((q) => ({
      claimed: q.txn === null || claimed.has(JSON.stringify([q.txn.userId, q.txn.deviceId, q.txn.endpoint, q.txn.txnId])),
      stored: [],
      knownUsers: new Set<string>(),
      appservicesQueued: [],
      lazyMark,
    }));
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
          as k(u text, d text, rd text, q text) on i.user_id = k.u and i.device_id = k.d
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
        where r.user_id = k.u and r.device_id = k.d and r.sender = ${sender} and r.type = ${type}
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
 * The CTE `newest (user_id, device_id, newest_stream_id)`: for the watched devices, the newest
 * message each had queued once the CTE `locked` held its locks. Rows for watched devices that
 * were not locked are harmless: nothing was stored for them. With nothing watched, no call.
 */
function newestAfterLock(watch: readonly Watched[]): SQL {
  if (watch.length === 0) return sql`newest as (select null::text as user_id, null::text as device_id, null::bigint as newest_stream_id where false)`;
  const json = JSON.stringify(watch.map((w) => ({ u: w.userId, d: w.deviceId })));
  return sql`newest as (select * from inbox_newest_after_lock(${json}::jsonb, (select count(*) from locked)))`;
}
