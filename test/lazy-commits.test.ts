import { sql } from 'drizzle-orm';
import * as v from 'valibot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import ping from '../handlers/ping/index.ts';
import { defineHandler, type HandlerModule } from '../src/sdk/define-handler.ts';
import { LAZY_COMMIT_FLUSHES } from '../src/metrics/counters.ts';
import { SendStatement } from '../src/storage/send-statement.ts';
import { LazyCommits } from '../src/storage/drivers/lazy-commits.ts';
import { queryRows } from '../src/shared/query-rows.ts';
import { TestClient } from './support/client.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';
import { usingPostgres } from './support/test-database.ts';

/**
 * A send to the server user alone stores only its txn claim, and that commit does not wait for
 * its WAL flush (src/storage/drivers/lazy-commits.ts); the claim must still be on disk before the 200.
 * PGlite has no WAL writer, so there a lazy commit stays unflushed until something flushes it:
 * what these tests read. On PostgreSQL (whose WAL writer flushes within wal_writer_delay anyway)
 * they check only what the server counted: when it flushed and when it did not.
 */
const SERVER_USER = `@:${SERVER_NAME}`;

const quiet = defineHandler({
  name: 'quiet',
  events: {
    // Stores nothing and replies nothing: the claim is the request's only write.
    'org.test.quiet': { schema: v.object({}), handle() {} },
  },
});

let t: TestApp;
let alice: TestClient;

/**
 * Whether every WAL record written so far has been flushed. Read only on PGlite: on PostgreSQL
 * the WAL is the cluster's, and other databases (other test files) write to it all the time.
 */
async function walFlushed(): Promise<boolean> {
  if (usingPostgres()) return true;
  const [row] = await queryRows<{ flushed: boolean }>(t.database.db, sql`select pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn() as flushed`);
  return row?.flushed === true;
}

const flushes = () => t.services.counters.get(LAZY_COMMIT_FLUSHES);

beforeAll(async () => {
  t = await startTestApp({}, [{ module: ping as HandlerModule<unknown> }, { module: quiet as HandlerModule<unknown> }]);
  alice = await TestClient.register(t.app, 'alice');
});

afterAll(async () => {
  await t.close();
});

describe('lazily committed claims', () => {
  it('need no flush of their own when the handler replied: the reply flushed the WAL past the claim', async () => {
    const before = flushes();
    const res = await alice.sendToDevice('org.example.ping', { [SERVER_USER]: { '': { nonce: 'n1' } } });
    expect(res.status).toBe(200);
    expect(flushes()).toBe(before);
    expect(await walFlushed()).toBe(true);
    const pong = (await alice.sync()).to_device?.events.find((e) => e.type === 'org.example.pong');
    expect(pong?.content).toMatchObject({ nonce: 'n1' });
  });

  it('are flushed before the 200 when nothing after them was: a handler that writes nothing, a type nobody handles', async () => {
    for (const type of ['org.test.quiet', 'org.test.unhandled']) {
      const before = flushes();
      const res = await alice.sendToDevice(type, { [SERVER_USER]: { '': {} } });
      expect(res.status).toBe(200);
      expect(flushes()).toBe(before + 1);
      expect(await walFlushed()).toBe(true);
    }
  });

  it('are on disk before a retry of the same txn id is answered', async () => {
    const res = await alice.sendToDevice('org.test.quiet', { [SERVER_USER]: { '': {} } }, 'lazy-retry');
    expect(res.status).toBe(200);
    const again = await alice.sendToDevice('org.test.quiet', { [SERVER_USER]: { '': {} } }, 'lazy-retry');
    expect(again).toEqual({ status: 200, body: {} });
    expect(await walFlushed()).toBe(true);
  });

  it('a retry of a send whose claim committed waiting for its flush is answered without a flush; of a lazy one, after one', async () => {
    const bob = await TestClient.register(t.app, 'bob-retry');
    const message = { [bob.userId]: { [bob.deviceId]: { n: 1 } } };
    expect((await alice.sendToDevice('org.test.note', message, 'durable-retry')).status).toBe(200);
    const before = flushes();
    for (let i = 0; i < 3; i++) expect(await alice.sendToDevice('org.test.note', message, 'durable-retry')).toEqual({ status: 200, body: {} });
    expect(flushes()).toBe(before);
    // Still stored once.
    expect((await bob.sync()).to_device?.events.filter((e) => e.type === 'org.test.note')).toHaveLength(1);

    // A lazy claim's retry cannot tell whether the claim is on disk yet: it flushes.
    expect((await alice.sendToDevice('org.test.quiet', { [SERVER_USER]: { '': {} } }, 'lazy-retry-2')).status).toBe(200);
    const lazyBefore = flushes();
    expect(await alice.sendToDevice('org.test.quiet', { [SERVER_USER]: { '': {} } }, 'lazy-retry-2')).toEqual({ status: 200, body: {} });
    expect(flushes()).toBe(lazyBefore + 1);
  });

  it.skipIf(usingPostgres())('commit without a flush, and makeDurable flushes them once however many wait (PGlite)', async () => {
    let made = 0;
    const lazy = new LazyCommits(t.database.db, () => made++);
    const store = new SendStatement(t.database.db, lazy);
    const [result] = await store.run([
      { txn: { userId: alice.userId, deviceId: alice.deviceId, endpoint: 'test', txnId: 'lazy-1' }, sender: alice.userId, type: 'org.test.quiet', targets: [] },
    ]);
    expect(result?.claimed).toBe(true);
    expect(result?.lazyMark).toBeTypeOf('number');
    expect(await walFlushed()).toBe(false);
    await Promise.all([1, 2, 3].map(() => lazy.makeDurable(result?.lazyMark as number)));
    expect(made).toBe(1);
    expect(await walFlushed()).toBe(true);
  });

  it.skipIf(usingPostgres())('count as flushed by a flushed statement begun after them, not by one begun before (PGlite)', async () => {
    let made = 0;
    const lazy = new LazyCommits(t.database.db, () => made++);
    const store = new SendStatement(t.database.db, lazy);
    const claim = (txnId: string) =>
      store.run([{ txn: { userId: alice.userId, deviceId: alice.deviceId, endpoint: 'test', txnId }, sender: alice.userId, type: 'org.test.quiet', targets: [] }]);
    const send = () =>
      store.run([{ txn: null, sender: SERVER_USER, type: 'org.test.note', targets: [{ userId: alice.userId, deviceId: alice.deviceId, content: '{}' }] }]);

    const [first] = await claim('lazy-2');
    await send();
    expect(await walFlushed()).toBe(true);
    await lazy.makeDurable(first?.lazyMark as number);
    expect(made).toBe(0);

    // A flushed statement sent before the lazy one returned may have committed before it.
    const earlier = send();
    const [second] = await claim('lazy-3');
    await earlier;
    expect(await walFlushed()).toBe(false);
    await lazy.makeDurable(second?.lazyMark as number);
    expect(made).toBe(1);
    expect(await walFlushed()).toBe(true);
  });

  it('answer each request of a batch of claims: new, already used, or without a txn id (nothing to commit)', async () => {
    const lazy = new LazyCommits(t.database.db);
    const store = new SendStatement(t.database.db, lazy);
    const txn = (txnId: string) => ({ userId: alice.userId, deviceId: alice.deviceId, endpoint: 'test', txnId });
    const send = (t: ReturnType<typeof txn> | null) => ({ txn: t, sender: alice.userId, type: 'org.test.quiet', targets: [] });
    await store.run([send(txn('used'))]);
    const results = await store.run([send(txn('fresh')), send(txn('used')), send(null)]);
    expect(results.map((r) => r.claimed)).toEqual([true, false, true]);
    const [alone] = await store.run([send(null)]);
    expect(alone?.claimed).toBe(true);
    expect(alone?.lazyMark).toBeUndefined();
  });

  it('answer a claim sent alone (its own statement): new and lazy, then already used; without LazyCommits, not lazy', async () => {
    const store = new SendStatement(t.database.db, new LazyCommits(t.database.db));
    const send = { txn: { userId: alice.userId, deviceId: alice.deviceId, endpoint: 'test', txnId: 'alone' }, sender: alice.userId, type: 'org.test.quiet', targets: [] };
    const [first] = await store.run([send]);
    expect(first?.claimed).toBe(true);
    expect(first?.lazyMark).toBeTypeOf('number');
    const [again] = await store.run([send]);
    expect(again?.claimed).toBe(false);

    const flushed = new SendStatement(t.database.db);
    const [other] = await flushed.run([{ ...send, txn: { ...send.txn, txnId: 'alone-flushed' } }]);
    expect(other?.claimed).toBe(true);
    expect(other?.lazyMark).toBeUndefined();
    expect(await walFlushed()).toBe(true);
    const [repeated] = await flushed.run([{ ...send, txn: { ...send.txn, txnId: 'alone-flushed' } }]);
    expect(repeated?.claimed).toBe(false);
    const rows = await queryRows<{ lazy: boolean }>(t.database.db, sql`select lazy from txn_ids where endpoint = 'test' and txn_id in ('alone', 'alone-flushed') order by txn_id`);
    expect(rows.map((r) => r.lazy)).toEqual([true, false]);
  });

  it('are not lazy when the statement stores messages too', async () => {
    const lazy = new LazyCommits(t.database.db);
    const store = new SendStatement(t.database.db, lazy);
    const [result] = await store.run([
      { txn: { userId: alice.userId, deviceId: alice.deviceId, endpoint: 'test', txnId: 'lazy-4' }, sender: alice.userId, type: 'org.test.note', targets: [{ userId: alice.userId, deviceId: alice.deviceId, content: '{}' }] },
    ]);
    expect(result?.claimed).toBe(true);
    expect(result?.lazyMark).toBeUndefined();
    expect(await walFlushed()).toBe(true);
  });
});
