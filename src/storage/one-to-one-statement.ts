import { sql } from 'drizzle-orm';
import { BuiltQuery, placeholder } from './built-query.ts';
import { inboxInsertSql } from './device-inbox-store.ts';
import type { EnqueueRequest } from './send-statement.ts';
import { txnClaimSql } from './txn-store.ts';

/**
 * The statement of one send to one named local device ({@link SendStatement.oneToOne}): the
 * general statement's claim, lock, insert, wake and answer rows, from the same per-table inserts,
 * with plain parameters for the JSON record sets and none of the joins only many sends or `*`
 * need. Its values are placeholders (see BuiltQuery): now, u, d, s, t, c; tu, td, te, tt with a
 * txn id; channel, from with a wake channel.
 */
export function oneToOneQuery(txn: boolean, watched: boolean, wake: boolean): BuiltQuery<Record<string, unknown>> {
  return new BuiltQuery(() => {
    const now = placeholder('now');
    const u = sql`${placeholder('u')}::text`;
    const d = sql`${placeholder('d')}::text`;
    const claimed = txn ? sql`exists (select 1 from claim)` : sql`true`;
    return sql`with
        ${txn ? sql`claim as (${txnClaimSql(sql`select ${placeholder('tu')}::text, ${placeholder('td')}::text, ${placeholder('te')}::text, ${placeholder('tt')}::text`, now, false)}),` : sql``}
        locked as (
          select dv.user_id, dv.device_id from devices dv
          where dv.user_id = ${u} and dv.device_id = ${d} and ${claimed}
          for update
        ),
        ${watched ? sql`newest as (select * from inbox_newest_after_lock(jsonb_build_array(jsonb_build_object('u', ${u}, 'd', ${d})), (select count(*) from locked))),` : sql``}
        ins as (${inboxInsertSql(sql`select l.user_id, l.device_id, ${placeholder('s')}::text, ${placeholder('t')}::text, ${placeholder('c')}::text from locked l`, now)})
        ${
          wake
            ? sql`, woke as materialized (
          select pg_notify(${placeholder('channel')}::text, json_build_object('from', ${placeholder('from')}::text, 'devices', json_build_array(json_build_array(${u}, ${d})))::text) as n
          where ${claimed}
        )`
            : sql``
        }
        select 'claimed' as k, 0 as r, null::int as o, null::text as u, null::text as d, null::bigint as n where ${claimed}
        union all
        select 'stored', 0, 0, l.user_id, l.device_id, null from locked l
        ${
          watched
            ? sql`union all
        select 'newest', null, null, n.user_id, n.device_id, n.newest_stream_id from newest n
        union all
        select 'id', null, null, i.user_id, i.device_id, i.stream_id from ins i`
            : sql``
        }
        ${wake ? sql`union all select 'woke', null::int, null::int, null::text, null::text, null::bigint from woke` : sql``}
        union all
        select 'known', null, null, ${u}, null, null where exists (select 1 from devices dv where dv.user_id = ${u})`;
  });
}

/** A send {@link SendStatement.oneToOne} can store: one named local device, nothing else to queue. */
export function isOneToOne(q: EnqueueRequest): boolean {
  return (
    q.targets.length === 1 &&
    q.targets[0]?.deviceId !== '*' &&
    q.inbound == null &&
    (q.remote?.length ?? 0) === 0 &&
    (q.appservices?.length ?? 0) === 0 &&
    (q.exclude?.length ?? 0) === 0
  );
}
