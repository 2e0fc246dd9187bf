import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queryRows } from '../src/shared/query-rows.ts';
import type { Database } from '../src/storage/drivers/database.ts';
import { createTestDatabase, usingPostgres } from './support/test-database.ts';

/**
 * inbox_newest_after_lock (drizzle/0012): the newest message of each device a send's long-poll
 * waits on, which decides whether the poll can answer from the send's own messages. One device
 * holding most of the table, analyzed, is the case whose plan read the whole table (see the
 * migration); the answers must be exact for devices with messages, without, and between them.
 */
let database: Database;

beforeAll(async () => {
  database = await createTestDatabase();
  const db = database.db;
  // A big queue for @bob:x/B, one for @alice:x/A2 and @carol:x/C, none for @alice:x/A1 or @zed:x/Z.
  await db.execute(sql`insert into device_inbox (user_id, device_id, sender, type, content, received_ts)
    select '@bob:x', 'B', '@s:x', 'm.t', '{}', 0 from generate_series(1, 20000)`);
  // Analyzed while bob's device is the only one with messages (as after a drain of everyone
  // else's): every row then looks like a match for any device, which is what made the planner
  // walk the primary key.
  await db.execute(sql`analyze device_inbox`);
  await db.execute(sql`insert into device_inbox (user_id, device_id, sender, type, content, received_ts) values
    ('@alice:x', 'A2', '@s:x', 'm.t', '{}', 0), ('@alice:x', 'A2', '@s:x', 'm.t', '{}', 0), ('@carol:x', 'C', '@s:x', 'm.t', '{}', 0)`);
});
afterAll(() => database?.close());

async function newest(devices: [string, string][]): Promise<Record<string, number>> {
  const rows = await queryRows<{ user_id: string; device_id: string; newest_stream_id: string | number }>(
    database.db,
    sql`select * from inbox_newest_after_lock(${JSON.stringify(devices.map(([u, d]) => ({ u, d })))}::jsonb, 0)`,
  );
  return Object.fromEntries(rows.map((r) => [`${r.user_id}/${r.device_id}`, Number(r.newest_stream_id)]));
}

async function maxOf(u: string, d: string): Promise<number> {
  const [row] = await queryRows<{ m: string | number | null }>(database.db, sql`select max(stream_id) as m from device_inbox where user_id = ${u} and device_id = ${d}`);
  return Number(row?.m ?? 0);
}

describe('the newest message of a watched device', () => {
  it('is the device own newest, or 0 for a device with none, beside a device holding most of the table', async () => {
    const devices: [string, string][] = [
      ['@alice:x', 'A1'],
      ['@alice:x', 'A2'],
      ['@bob:x', 'B'],
      ['@carol:x', 'C'],
      ['@zed:x', 'Z'],
      ['@alice:x', 'A3'],
    ];
    const expected = Object.fromEntries(await Promise.all(devices.map(async ([u, d]) => [`${u}/${d}`, await maxOf(u, d)] as const)));
    expect(expected['@alice:x/A1']).toBe(0);
    expect(expected['@bob:x/B']).toBeGreaterThan(0);
    expect(await newest(devices)).toEqual(expected);
  });

  // Statistics of PGlite's one backend are read back exactly; PostgreSQL's pool spreads the
  // queries over connections whose counters flush on their own schedule.
  it.skipIf(usingPostgres())('reads the index near the device, not the whole table, for a device with an empty queue', async () => {
    const read = async () => {
      await database.db.execute(sql`select pg_stat_force_next_flush()`);
      await database.db.execute(sql`select 1`);
      const rows = await queryRows<{ n: string | number }>(
        database.db,
        sql`select coalesce(sum(idx_tup_read), 0) + coalesce((select seq_tup_read from pg_stat_user_tables where relname = 'device_inbox'), 0) as n from pg_stat_user_indexes where relname = 'device_inbox'`,
      );
      return Number(rows[0]!.n);
    };
    const before = await read();
    expect(await newest([['@alice:x', 'A1']])).toEqual({ '@alice:x/A1': 0 });
    // One entry (the neighbouring device's) is enough; the table holds 20,003 rows.
    expect((await read()) - before).toBeLessThan(10);
  });
});
