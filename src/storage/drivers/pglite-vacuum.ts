import { sql } from 'drizzle-orm';
import { queryRows } from '../../shared/query-rows.ts';
import type { Db } from './database.ts';

/**
 * PGlite runs PostgreSQL as one backend with no background workers, so autovacuum never runs
 * there (`show autovacuum` says on; nothing acts on it). Every delivered to-device message is a
 * deleted row, as is every expired txn id and sent federation or appservice row: without VACUUM
 * those dead rows stay in the tables and their indexes for good, the data directory only grows,
 * and the planner keeps the statistics of an empty table. This applies autovacuum's own default
 * rule to the tables, from the statistics PGlite keeps: vacuum when dead rows exceed 50 + 20 % of
 * the live ones, analyze when changes since the last analyze exceed 50 + 10 %.
 *
 * PGlite executes on the process's thread, so each VACUUM holds every request for as long as it
 * takes; a table at a time, as soon as it is due, keeps each pause short.
 */
export async function vacuumWhereDue(db: Db): Promise<{ table: string; dead: number }[]> {
  const due = await queryRows<{ schemaname: string; relname: string; dead: string | number; vacuum: boolean }>(
    db,
    sql`select schemaname, relname, n_dead_tup as dead, n_dead_tup > 50 + 0.2 * n_live_tup as vacuum
        from pg_stat_user_tables
        where n_dead_tup > 50 + 0.2 * n_live_tup or n_mod_since_analyze > 50 + 0.1 * n_live_tup
        order by n_dead_tup desc`,
  );
  const done: { table: string; dead: number }[] = [];
  for (const t of due) {
    const name = `${quoteIdent(t.schemaname)}.${quoteIdent(t.relname)}`;
    await db.execute(sql.raw(t.vacuum ? `vacuum (analyze) ${name}` : `analyze ${name}`));
    done.push({ table: `${t.schemaname}.${t.relname}`, dead: Number(t.dead) });
  }
  return done;
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
