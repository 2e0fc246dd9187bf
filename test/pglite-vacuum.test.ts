import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PGLITE_VACUUM_INTERVAL_MS } from '../src/runtime/maintenance.ts';
import { queryRows } from '../src/shared/query-rows.ts';
import { TestClock } from '../src/testing/test-clock.ts';
import { TestClient } from './support/client.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';
import { openPgliteInMemory } from './support/test-database.ts';

/**
 * PGlite has no autovacuum (one backend, no background workers), so the server vacuums its
 * tables itself: delivered messages are deleted rows, and without VACUUM they would stay in the
 * table and its indexes for good. Always on PGlite, whatever TEST_DATABASE_URL says: on
 * PostgreSQL autovacuum does this and the server leaves it alone.
 */
let t: TestApp;
const clock = new TestClock();

beforeAll(async () => {
  t = await startTestApp({}, undefined, { clock, database: await openPgliteInMemory() });
});
afterAll(() => t.close());

/** device_inbox's row counts as PGlite's statistics have them, once this backend's pending counts are flushed. */
async function inboxStats(): Promise<{ live: number; dead: number; vacuumed: boolean }> {
  // Pending statistics reach the shared counters when a transaction ends, at most once a second
  // unless forced.
  await t.database.db.execute(sql`select pg_stat_force_next_flush()`);
  await t.database.db.execute(sql`select 1`);
  const [row] = await queryRows<{ live: string | number; dead: string | number; vacuumed: boolean }>(
    t.database.db,
    sql`select n_live_tup as live, n_dead_tup as dead, last_vacuum is not null as vacuumed from pg_stat_user_tables where relname = 'device_inbox'`,
  );
  return { live: Number(row!.live), dead: Number(row!.dead), vacuumed: row!.vacuumed };
}

describe('on PGlite', () => {
  it('vacuums device_inbox once delivered messages have left dead rows, every minute of the clock, until stopped', async () => {
    const alice = await TestClient.register(t.app, 'alice');
    const bob = await TestClient.register(t.app, 'bob');
    let since: string | null = null;
    /** n messages to bob, each its own send, then synced and acknowledged (deleted) until none are left. */
    const deliver = async (n: number) => {
      for (let i = 0; i < n; i++) expect((await alice.sendToDevice('m.vacuum', { [bob.userId]: { [bob.deviceId]: { i } } })).status).toBe(200);
      for (;;) {
        const s = await bob.sync({ since });
        since = s.next_batch;
        if (s.to_device.events.length === 0) break;
      }
    };
    await deliver(10);
    // Below autovacuum's rule (50 + 20 % of the live rows): not yet due.
    expect(await inboxStats()).toEqual({ live: 0, dead: 10, vacuumed: false });
    expect(await t.maintenance.vacuumOnce()).toEqual([]);

    await deliver(100);
    const before = await inboxStats();
    expect(before).toEqual({ live: 0, dead: 110, vacuumed: false });

    clock.settle = () => t.maintenance.idle();
    t.maintenance.start();
    try {
      await t.maintenance.idle();
      await clock.advance(PGLITE_VACUUM_INTERVAL_MS - 1);
      expect((await inboxStats()).dead).toBe(before.dead);
      await clock.advance(1);
      expect(await inboxStats()).toEqual({ live: 0, dead: 0, vacuumed: true });
    } finally {
      t.maintenance.stop();
      clock.settle = async () => {};
    }
    // Stopped: dead rows stay until it runs again.
    await deliver(100);
    await clock.advance(2 * PGLITE_VACUUM_INTERVAL_MS);
    expect((await inboxStats()).dead).toBe(100);
  });
});
