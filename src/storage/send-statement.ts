import { sql, type SQL } from 'drizzle-orm';
import type { Db } from './drivers/database.ts';
import type { LazyCommits } from './drivers/lazy-commits.ts';
import { queryRows } from '../shared/query-rows.ts';
import type { BuiltQuery } from './built-query.ts';
import { isOneToOne, oneToOneQuery } from './one-to-one-statement.ts';
import { oneClaimQuery } from './one-claim-statement.ts';
import { appserviceQueueInsertSql } from './appservice-queue-store.ts';
import { inboxInsertSql } from './device-inbox-store.ts';
import { inboundClaimSql } from './federation-inbound-store.ts';
import { outboxInsertSql } from './federation-outbox-store.ts';
import { NewMessages } from './new-messages.ts';
import { txnClaimSql, type TxnKey } from './txn-store.ts';

/** One planned send (a request, a federation EDU, a module's reply), for {@link SendStatement.run}. */
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
  /** Messages not to store, by target index and device (MSC3944: cancellations whose request went instead). */
  exclude?: readonly { target: number; deviceId: string }[];
}

/** Where a send statement NOTIFYs the devices it stored for (see PgWakeups), and whether anyone may listen. */
export interface StatementWake {
  channel: string;
  /** This process: its own NOTIFYs are not wake-ups for it. */
  from: string;
  /** False when no other process is known to listen (PgWakeups.othersMayListen): no NOTIFY then. Absent: always. */
  othersMayListen?: () => boolean;
}

/** A device whose NewMessages are wanted (see `inbox_newest_after_lock`, migration 0006). */
export interface Watched {
  userId: string;
  deviceId: string;
}

export interface EnqueueResult {
  /** False when the txn id (or the EDU) was already used: nothing was stored. */
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
   * (a statement with {@link LazyCommits}): pass it to `makeDurable` before answering.
   */
  lazyMark?: number | undefined;
}

type Row = { k: string; r: number | null; o: number | null; u: string | null; d: string | null; n: string | number | null };

/**
 * The one write of planned sends: claims each send's txn id or EDU, and for the sends whose
 * claim succeeded, in one statement (one round trip, one commit, one take of the devices' row
 * locks): expands `*` to the user's devices, locks the target devices in (user, device) order,
 * queues one message per existing target in send order, queues the remote messages and the
 * appservices' copies. Each table's insert is its store's (txnClaimSql, inboxInsertSql…).
 */
export class SendStatement {
  /** {@link oneToOneQuery}'s texts, by shape: with a txn id or not, watched or not, NOTIFYing or not. */
  private readonly oneToOneShapes: (BuiltQuery<Record<string, unknown>> | undefined)[] = [];
  /** {@link oneClaimQuery}'s texts: committed with its flush, and lazily. */
  private readonly oneClaimShapes: (BuiltQuery<Record<string, unknown>> | undefined)[] = [];

  constructor(
    private readonly db: Db,
    /** With it, statements that store only claims commit lazily (see {@link LazyCommits}). */
    private readonly lazy?: LazyCommits,
    /**
     * With it (PostgreSQL, several processes), the statement itself NOTIFYs the targeted devices
     * on `channel`, delivered at its commit: no statement and no socket write of their own.
     */
    private readonly wake?: StatementWake,
  ) {}

  /** The wake to NOTIFY in this statement, if any process may listen. */
  private wakeNow(): StatementWake | undefined {
    return this.wake !== undefined && (this.wake.othersMayListen?.() ?? true) ? this.wake : undefined;
  }

  /**
   * Txn ids within one call must be distinct. Answers, per send, whether its claim was new,
   * which devices got a message (with what the batch stored for each), and which of its target
   * users exist. Inside a transaction that already holds the target devices' locks (see
   * ToDeviceService's transaction path) it takes them again at no cost.
   */
  async run(requests: readonly EnqueueRequest[]): Promise<EnqueueResult[]> {
    if (requests.every((q) => q.targets.length === 0 && (q.remote?.length ?? 0) === 0 && (q.appservices?.length ?? 0) === 0 && q.inbound == null)) {
      return this.claimTxnIds(requests);
    }
    const only = requests.length === 1 ? (requests[0] as EnqueueRequest) : null;
    if (only !== null && isOneToOne(only)) return this.oneToOne(only);
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
    const excluded = requests.flatMap((q, r) => (q.exclude ?? []).map((e) => ({ r, o: e.target, d: e.deviceId })));
    const watch = requests.flatMap((q) => q.watch ?? []);
    const inbound = requests.some((q) => q.inbound != null);
    const claimsOnly = targets === '[]' && remote.length === 0 && owed.size === 0;
    const lazy = claimsOnly ? this.lazy : undefined;
    const head = sql`
        with req as (
          select * from jsonb_to_recordset(${reqs}::jsonb) as q(r int, tu text, td text, te text, tt text, io text, im text, s text, t text)
        ),
        claim as (${txnClaimSql(sql`select q.tu, q.td, q.te, q.tt from req q where q.tu is not null`, now, lazy !== undefined)}),
        ${inbound ? sql`claim_edu as (${inboundClaimSql(sql`select q.io, q.im from req q where q.io is not null`, now)}),` : sql``}
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
    const wake = this.wakeNow();
    const flushed = lazy === undefined ? this.lazy?.flushedCommit() : undefined;
    const rows = await queryRows<Row>(
      this.db,
      claimsOnly
        ? // Only claims, a federation EDU's among them (sends to the server user alone; client
          // claims alone go to claimTxnIds): none of the storing CTEs. With lazy commits, this
          // transaction's commit does not wait for its flush; the 'lazy' row is what makes the
          // CTE run whether or not anything was claimed.
          sql`${head}${lazy === undefined ? sql`` : sql`, lazy as (select set_config('synchronous_commit', 'off', true) as v)`}
        select 'claimed' as k, ok.r, null::int as o, null::text as u, null::text as d, null::bigint as n from ok
        ${lazy === undefined ? sql`` : sql`union all select 'lazy', null, null, null, null, null from lazy`}`
        : sql`${head},
        tgt as (
          select * from jsonb_to_recordset(${targets}::jsonb) as x(r int, u text, d text, c text, o int)
        ),
        targeted as (
          select x.r, x.u, x.d, x.c, x.o, ok.s, ok.t from tgt x join ok on ok.r = x.r where x.d <> '*'
          union all
          select x.r, x.u, dv.device_id as d, x.c, x.o, ok.s, ok.t from tgt x join ok on ok.r = x.r
          join devices dv on dv.user_id = x.u where x.d = '*'
        ),
        expanded as (
          select * from targeted e
          ${
            excluded.length === 0
              ? sql``
              : sql`where not exists (
            select 1 from jsonb_to_recordset(${JSON.stringify(excluded)}::jsonb) as z(r int, o int, d text)
            where z.r = e.r and z.o = e.o and z.d = e.d)`
          }
        ),
        -- Each message with its device's row locked, the locks taken in (user, device) order. The
        -- messages ride through the lock instead of being joined back to it after: planned from
        -- statistics that say a user has a device or two, that join of two CTEs was a nested loop,
        -- a million comparisons for one "*" to a user with 1,000 devices (send-statement-plans.test.ts).
        locked as (
          select e.r, e.o, e.u, e.d, e.c, e.s, e.t from expanded e
          join devices dv on dv.user_id = e.u and dv.device_id = e.d
          order by dv.user_id, dv.device_id
          for update of dv
        ),
        ${newestAfterLock(watch)},
        ins as (${inboxInsertSql(
          sql`select l.u, l.d, l.s, l.t, l.c from locked l
          order by l.r, l.o, l.u, l.d`,
          now,
        )})
        ${
          remote.length === 0
            ? sql``
            : sql`,
        outbox as (${outboxInsertSql(
          sql`select m.x, ok.s, ok.t, m.u, m.d, m.c, null::text
          from jsonb_to_recordset(${JSON.stringify(remote)}::jsonb) as m(r int, x text, u text, d text, c text, o int)
          join ok on ok.r = m.r
          order by m.r, m.o`,
          now,
        )})`
        }
        ${
          wake === undefined
            ? sql``
            : sql`,
        woke as materialized (
          -- Payloads under NOTIFY's 8,000 bytes: devices grouped by their running size.
          select pg_notify(${wake.channel}, json_build_object('from', ${wake.from}::text, 'devices', json_agg(json_build_array(w.u, w.d)))::text) as n
          from (
            select s.u, s.d, sum(octet_length(s.u) + octet_length(s.d) + 8) over (order by s.u, s.d) / 7000 as chunk
            from (select distinct x.u, x.d from tgt x join ok on ok.r = x.r) s
          ) w
          group by w.chunk
        )`
        }
        ${
          owed.size === 0
            ? sql``
            : sql`,
        owed as (${appserviceQueueInsertSql(
          sql`select a.a, i.stream_id, a.x, i.type, i.sender, i.content, i.user_id, i.device_id
          from ins i join jsonb_to_recordset(${JSON.stringify([...owed.values()])}::jsonb) as a(u text, a text, x boolean) on a.u = i.user_id
          order by i.stream_id, a.a`,
          now,
        )})`
        }
        select 'claimed' as k, ok.r, null::int as o, null::text as u, null::text as d, null::bigint as n from ok
        union all
        select 'stored', l.r, l.o, l.u, l.d, null from locked l
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
        ${wake === undefined ? sql`` : sql`union all select 'woke', null::int, null::int, null::text, null::text, null::bigint from woke`}
        union all
        select distinct 'known', null::int, null::int, dv.user_id, null::text, null::bigint from devices dv where dv.user_id in (select u from tgt)
      `,
    );
    flushed?.();
    return resultsOf(requests, rows, lazy?.mark());
  }

  /**
   * A batch of one send to one named local device, what a client sending alone (or a module's
   * reply) makes: the same claim, lock, insert and answer rows as {@link run}'s statement, from
   * the same per-table inserts, with the values as plain parameters instead of JSON record sets
   * and none of the joins that only many sends or `*` need. One client sending serially spent
   * about half its time in the general statement (issue 30's S1 at 1 connection).
   */
  private async oneToOne(q: EnqueueRequest): Promise<EnqueueResult[]> {
    const target = q.targets[0] as EnqueueRequest['targets'][number];
    const watched = (q.watch ?? []).some((w) => w.userId === target.userId && w.deviceId === target.deviceId);
    const wake = this.wakeNow();
    const shape = (q.txn === null ? 0 : 1) + (watched ? 2 : 0) + (wake === undefined ? 0 : 4);
    const query = (this.oneToOneShapes[shape] ??= oneToOneQuery(q.txn !== null, watched, wake !== undefined));
    // A commit that waits for its flush, like the general statement's: lazy claims before it are durable after it.
    const flushed = this.lazy?.flushedCommit();
    const rows = await query.rows<Row>(this.db, {
      now: Date.now(),
      u: target.userId,
      d: target.deviceId,
      s: q.sender,
      t: q.type,
      c: target.content,
      tu: q.txn?.userId,
      td: q.txn?.deviceId,
      te: q.txn?.endpoint,
      tt: q.txn?.txnId,
      channel: wake?.channel,
      from: wake?.from,
    });
    flushed?.();
    return resultsOf([q], rows, undefined);
  }

  /**
   * A batch that stores nothing but txn ids (sends to the server user alone, from clients):
   * just the claims, lazily committed when the statement has {@link LazyCommits}. The general
   * statement's CTEs cost a PGlite ping 295 µs here against 168 µs for this (in process).
   */
  private async claimTxnIds(requests: readonly EnqueueRequest[]): Promise<EnqueueResult[]> {
    const lazy = this.lazy;
    const keys = requests.flatMap((q, r) => (q.txn === null ? [] : [{ u: q.txn.userId, d: q.txn.deviceId, e: q.txn.endpoint, t: q.txn.txnId, r }]));
    // Nothing to write, so nothing to commit or make durable.
    if (keys.length === 0) return requests.map(() => ({ claimed: true, stored: [], knownUsers: new Set<string>(), appservicesQueued: [] }));
    const only = requests.length === 1 ? requests[0]?.txn : null;
    if (only != null) {
      const query = (this.oneClaimShapes[lazy === undefined ? 0 : 1] ??= oneClaimQuery(lazy !== undefined));
      const rows = await query.rows<Row>(this.db, { now: Date.now(), tu: only.userId, td: only.deviceId, te: only.endpoint, tt: only.txnId });
      return resultsOf(requests, rows, lazy?.mark());
    }
    const source = sql`select k.u, k.d, k.e, k.t, k.r from jsonb_to_recordset(${JSON.stringify(keys)}::jsonb) as k(u text, d text, e text, t text, r int)`;
    const rows = await queryRows<Row>(
      this.db,
      sql`with ${
        lazy === undefined
          ? sql``
          : // This transaction's commit does not wait for its flush; the 'lazy' row below is what
            // makes the CTE run whether or not anything was claimed.
            sql`lazy as (select set_config('synchronous_commit', 'off', true) as v),`
      }
        keys as (${source}),
        claim as (${txnClaimSql(sql`select k.u, k.d, k.e, k.t from keys k`, Date.now(), lazy !== undefined)})
        select 'claimed' as k, k.r, null::int as o, null::text as u, null::text as d, null::bigint as n
        from keys k join claim c on c.user_id = k.u and c.device_id = k.d and c.endpoint = k.e and c.txn_id = k.t
        ${lazy === undefined ? sql`` : sql`union all select 'lazy', null, null, null, null, null from lazy`}`,
    );
    const results = resultsOf(requests, rows, lazy?.mark());
    // A send without a txn id stores nothing here and is always new.
    requests.forEach((q, i) => {
      if (q.txn === null) (results[i] as EnqueueResult).claimed = true;
    });
    return results;
  }
}

/** The statement's rows, per send. */
function resultsOf(requests: readonly EnqueueRequest[], rows: readonly Row[], lazyMark: number | undefined): EnqueueResult[] {
  const results: EnqueueResult[] = requests.map(() => ({ claimed: false, stored: [], knownUsers: new Set<string>(), appservicesQueued: [], lazyMark }));
  const known = new Set<string>();
  const queuedFor = new Set<string>();
  const watching = requests.some((q) => (q.watch?.length ?? 0) > 0);
  // Per device: its newest queued message before this batch, its messages' (send, target) positions, their ids.
  const perDevice = new Map<string, { previousId: number | null; at: [number, number][]; ids: number[] }>();
  const deviceOf = (u: string | null, d: string | null) => {
    const key = `${u ?? ''}\u0000${d ?? ''}`;
    let entry = perDevice.get(key);
    if (entry === undefined) perDevice.set(key, (entry = { previousId: null, at: [], ids: [] }));
    return entry;
  };
  const storedRows: { r: number; u: string; d: string }[] = [];
  for (const row of rows) {
    if (row.k === 'lazy' || row.k === 'woke') continue;
    if (row.k === 'known') known.add(row.u ?? '');
    else if (row.k === 'appservice') queuedFor.add(row.u ?? '');
    else if (row.k === 'id') deviceOf(row.u, row.d).ids.push(Number(row.n));
    else if (row.k === 'newest') deviceOf(row.u, row.d).previousId = Number(row.n);
    else if (row.k === 'claimed') {
      const result = results[Number(row.r)];
      if (result !== undefined) result.claimed = true;
    } else {
      // Positions matter only for watched devices' news; S1's batches of 500 watch nothing.
      if (watching) deviceOf(row.u, row.d).at.push([Number(row.r), Number(row.o)]);
      storedRows.push({ r: Number(row.r), u: row.u ?? '', d: row.d ?? '' });
    }
  }
  const news = new Map<string, NewMessages>();
  for (const [key, { previousId, at, ids }] of perDevice) {
    // Not watched, or (never expected) the same rows counted differently: the device's polls read.
    if (previousId === null || at.length !== ids.length) continue;
    // Ids were drawn in (send, target) order: both sorted, they pair up.
    at.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    ids.sort((a, b) => a - b);
    const messages = at.map(([r, o], i) => {
      const q = requests[r] as EnqueueRequest;
      return { streamId: ids[i] as number, sender: q.sender, type: q.type, content: q.targets[o]?.content ?? '' };
    });
    news.set(key, new NewMessages(previousId, messages));
  }
  for (const { r, u, d } of storedRows) results[r]?.stored.push({ userId: u, deviceId: d, news: news.get(`${u}\u0000${d}`) });
  requests.forEach((q, i) => {
    const result = results[i] as EnqueueResult;
    for (const t of q.targets) if (known.has(t.userId)) result.knownUsers.add(t.userId);
    result.appservicesQueued = [...new Set((q.appservices ?? []).map((a) => a.appserviceId))].filter((id) => queuedFor.has(id));
  });
  return results;
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
