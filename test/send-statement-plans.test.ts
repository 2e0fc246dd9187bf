import { sql, type SQL } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queryRows } from '../src/shared/query-rows.ts';
import type { Database, Db } from '../src/storage/drivers/database.ts';
import { SendStatement, type EnqueueRequest } from '../src/storage/send-statement.ts';
import { createTestDatabase } from './support/test-database.ts';

/**
 * The send statement's plans under real statistics. PostgreSQL's autovacuum analyzes the tables
 * (and an operator may run ANALYZE on PGlite): the statistics then say a user has a device or
 * two, and a plan that is fine with default estimates can compare every message with every
 * device. That is not a matter of speed on one machine but of work that grows with the square of
 * a fan-out, so these tests count it: the rows that joins read and threw away, from EXPLAIN
 * ANALYZE of the very statement a send runs.
 */
const FAN_OUT_DEVICES = 1_000;
let database: Database;

beforeAll(async () => {
  database = await createTestDatabase();
  const db = database.db;
  await db.execute(sql`insert into devices (user_id, device_id, created_ts) select '@fan:x', 'D' || i, 0 from generate_series(1, ${FAN_OUT_DEVICES}) i`);
  await db.execute(sql`insert into devices (user_id, device_id, created_ts) select '@one' || i || ':x', 'O', 0 from generate_series(1, 2000) i`);
  // A backlog delivered and deleted, as S4's drain leaves it, then the statistics autovacuum would take.
  await db.execute(sql`insert into device_inbox (user_id, device_id, sender, type, content, received_ts)
    select '@one1:x', 'O', '@s:x', 'm.t', '{}', 0 from generate_series(1, 20000)`);
  await db.execute(sql`delete from device_inbox`);
  await db.execute(sql`vacuum analyze`);
}, 120_000);
afterAll(() => database?.close());

type PlanNode = { 'Rows Removed by Join Filter'?: number; 'Actual Loops'?: number; Plans?: PlanNode[] };

/** Runs the sends as SendStatement would, under EXPLAIN ANALYZE: the rows its joins discarded. */
async function discardedByJoins(requests: EnqueueRequest[]): Promise<number> {
  let plan: PlanNode | undefined;
  const explaining = {
    async execute(query: SQL) {
      const rows = await queryRows<{ 'QUERY PLAN': unknown }>(database.db, sql`explain (analyze, format json) ${query}`);
      const json = rows[0]?.['QUERY PLAN'];
      plan = (typeof json === 'string' ? JSON.parse(json) : json)[0].Plan;
      return [];
    },
  } as unknown as Db;
  await new SendStatement(explaining).run(requests);
  const walk = (node: PlanNode): number =>
    (node['Rows Removed by Join Filter'] ?? 0) * (node['Actual Loops'] ?? 1) + (node.Plans ?? []).reduce((sum, child) => sum + walk(child), 0);
  if (plan === undefined) throw new Error('no plan');
  return walk(plan);
}

const send = (txnId: string, targets: EnqueueRequest['targets']): EnqueueRequest => ({
  txn: { userId: '@s:x', deviceId: 'S', endpoint: 'sendToDevice', txnId },
  sender: '@s:x',
  type: 'm.t',
  targets,
});

describe('the send statement, planned from analyzed tables', () => {
  it('expands "*" to a user with 1,000 devices without comparing each message with each device', async () => {
    const discarded = await discardedByJoins([send('fan-explained', [{ userId: '@fan:x', deviceId: '*', content: '{}' }])]);
    // Linear work discards at most a few rows per device; the plan this replaced discarded 999,000 twice.
    expect(discarded).toBeLessThan(10 * FAN_OUT_DEVICES);

    await database.db.execute(sql`delete from device_inbox`);
    const [result] = await new SendStatement(database.db).run([send('fan', [{ userId: '@fan:x', deviceId: '*', content: '{"n":1}' }])]);
    expect(result?.stored).toHaveLength(FAN_OUT_DEVICES);
    const perDevice = await queryRows<{ n: string | number; devices: string | number }>(
      database.db,
      sql`select count(*) as n, count(distinct device_id) as devices from device_inbox where user_id = '@fan:x'`,
    );
    expect(perDevice.map((r) => [Number(r.n), Number(r.devices)])).toEqual([[FAN_OUT_DEVICES, FAN_OUT_DEVICES]]);
  });

  it('stores a batch of 500 sends, each to its own device, without comparing each send with each other', async () => {
    const batch = Array.from({ length: 500 }, (_, i) => send(`batch-${i}`, [{ userId: `@one${i + 1}:x`, deviceId: 'O', content: `{"i":${i}}` }]));
    expect(await discardedByJoins(batch)).toBeLessThan(10 * batch.length);
  });

  it('queues the copies of a batch of 500 sends to 500 appservice users without comparing each copy with each message', async () => {
    const batch = Array.from({ length: 500 }, (_, i) => ({
      ...send(`as-${i}`, [{ userId: `@one${i + 1}:x`, deviceId: 'O', content: `{"i":${i}}` }]),
      appservices: [{ userId: `@one${i + 1}:x`, appserviceId: 'bridge', exclusive: true }],
    }));
    expect(await discardedByJoins(batch)).toBeLessThan(10 * batch.length);
  });
});
