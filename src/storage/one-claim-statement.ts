import { sql } from 'drizzle-orm';
import { BuiltQuery, placeholder } from './built-query.ts';
import { txnClaimSql } from './txn-store.ts';

/**
 * The statement of one send that stores nothing but its txn id (a client's message to the server
 * user alone, see {@link SendStatement}): the general claim statement's insert and answer rows,
 * with plain parameters instead of a JSON record set. On PGlite the record set and its join cost a
 * ping round trip (issue 30's S2) half again what the claim itself costs. Lazy: the transaction's
 * commit does not wait for its flush; the 'lazy' row is what makes that CTE run whether or not
 * the id was new. Its values are placeholders (see BuiltQuery): now, tu, td, te, tt.
 */
export function oneClaimQuery(lazy: boolean): BuiltQuery<Record<string, unknown>> {
  return new BuiltQuery(() => {
    const source = sql`select ${placeholder('tu')}::text, ${placeholder('td')}::text, ${placeholder('te')}::text, ${placeholder('tt')}::text`;
    return sql`with ${lazy ? sql`lazy as (select set_config('synchronous_commit', 'off', true) as v),` : sql``}
        claim as (${txnClaimSql(source, placeholder('now'), lazy)})
        select 'claimed' as k, 0 as r, null::int as o, null::text as u, null::text as d, null::bigint as n from claim
        ${lazy ? sql`union all select 'lazy', null, null, null, null, null from lazy` : sql``}`;
  });
}
