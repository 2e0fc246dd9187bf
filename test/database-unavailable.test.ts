import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../src/app.ts';
import { parseConfig } from '../src/config/config.ts';
import { databaseUnavailableCode } from '../src/storage/drivers/database-unavailable.ts';
import { openDatabase, type Database } from '../src/storage/drivers/database.ts';
import { postgresJsUrl } from '../src/storage/drivers/postgres-url.ts';
import { TestClient } from './support/client.ts';
import { CuttableProxy } from './support/cuttable-proxy.ts';
import { createPostgresDatabaseUrl, usingPostgres } from './support/test-database.ts';

describe('telling an unavailable database from a failed request', () => {
  it('classifies connection errors and SQLSTATEs, through drizzle causes', () => {
    const wrapped = (code: string) => Object.assign(new Error('Failed query: select 1'), { cause: Object.assign(new Error('x'), { code }) });
    for (const code of ['ECONNREFUSED', 'CONNECTION_CLOSED', 'CONNECT_TIMEOUT', '08006', '08P01', '57P01', '57P03', '25006', '53300', 'DATABASE_WAIT_TIMEOUT']) {
      expect(databaseUnavailableCode(wrapped(code)), code).toBe(code);
    }
    for (const code of ['23505', '40001', '57014', '42P01']) expect(databaseUnavailableCode(wrapped(code)), code).toBeNull();
    expect(databaseUnavailableCode(new Error('plain'))).toBeNull();
  });

  it('maps target_session_attrs=read-write to postgres.js primary, and nothing else', () => {
    expect(postgresJsUrl('postgres://a:1,b:2/db?target_session_attrs=read-write')).toBe('postgres://a:1,b:2/db?target_session_attrs=primary');
    expect(postgresJsUrl('postgres://a/db?x=1&target_session_attrs=read-write&y=2')).toBe('postgres://a/db?x=1&target_session_attrs=primary&y=2');
    expect(postgresJsUrl('postgres://a/db?target_session_attrs=read-only')).toBe('postgres://a/db?target_session_attrs=read-only');
  });
});

/**
 * The database goes away under running servers (a TCP proxy that resets and then blackholes
 * every connection, as a dead host does) and comes back: requests are answered 503 with
 * Retry-After within the wait bound instead of hanging or 500, readiness fails, and once the
 * database is back everything works again without a restart, wake-ups across processes included.
 */
describe.skipIf(!usingPostgres())('a database that goes away and comes back', () => {
  let pg: { url: string; drop(): Promise<void> };
  const proxy = new CuttableProxy('127.0.0.1', Number(new URL(process.env.TEST_DATABASE_URL ?? 'postgres://x:5432').port || 5432));
  const instances: { app: App; database: Database }[] = [];

  async function instance(): Promise<App> {
    const url = new URL(pg.url);
    url.host = `127.0.0.1:${proxy.port}`;
    const database = await openDatabase({ kind: 'postgres', url: url.toString(), poolSize: 4, waitTimeoutMs: 500 });
    const app = createApp({ config: parseConfig({ server_name: 'away.test' }), database });
    await app.start();
    instances.push({ app, database });
    return app;
  }

  beforeAll(async () => {
    pg = (await createPostgresDatabaseUrl()) as { url: string; drop(): Promise<void> };
    await proxy.start();
  });

  afterAll(async () => {
    proxy.restore();
    for (const i of instances) {
      await i.app.stop();
      await i.database.close();
    }
    await proxy.close();
    await pg?.drop();
  });

  it('answers 503 with Retry-After while it is away, and works again once it is back', async () => {
    const a = await instance();
    const b = await instance();
    const alice = await TestClient.register(a.app, 'alice');
    const bob = await TestClient.register(a.app, 'bob');
    const bobOnB = new TestClient(b.app, bob.userId, bob.deviceId, bob.token);
    const initial = await bobOnB.sync();
    // A long-poll parked on B through the outage: answered 200 or 503, never left hanging.
    const parked = bobOnB.request('GET', `/v3/sync?since=${encodeURIComponent(initial.next_batch)}&timeout=30000`);

    proxy.cut();
    const started = Date.now();
    const res = await alice.request('PUT', '/v3/sendToDevice/m.test/during', { messages: { [bob.userId]: { [bob.deviceId]: { n: 0 } } } });
    const waited = Date.now() - started;
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('2');
    expect(((await res.json()) as { errcode: string }).errcode).toBe('M_UNKNOWN');
    expect(waited).toBeLessThan(3_000);
    const ready = await a.app.request('/health/ready');
    expect(ready.status).toBe(503);
    await ready.body?.cancel();

    proxy.restore();
    const restoredAt = Date.now();
    let status = 0;
    while (status !== 200 && Date.now() < restoredAt + 15_000) {
      const r = await alice.request('PUT', '/v3/sendToDevice/m.test/after', { messages: { [bob.userId]: { [bob.deviceId]: { n: 1 } } } });
      status = r.status;
      await r.body?.cancel();
      if (status !== 200) {
        expect(status).toBe(503);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    expect(status).toBe(200);
    console.warn(`sends succeeded ${Date.now() - restoredAt} ms after the database came back`);
    expect([200, 503]).toContain((await parked).status);
    const s1 = await bobOnB.sync({ since: initial.next_batch });
    expect(s1.to_device.events.map((e) => e.content)).toEqual([{ n: 1 }]);

    // B's LISTEN connection went down with the rest: wake-ups from A reach B again.
    const polling = bobOnB.sync({ since: s1.next_batch, timeout: 30_000 });
    await new Promise((r) => setTimeout(r, 100));
    const sentAt = Date.now();
    expect((await alice.sendToDevice('m.test', { [bob.userId]: { [bob.deviceId]: { n: 2 } } }, 'after-2')).status).toBe(200);
    let woken = await polling;
    // B re-arms its LISTEN on its own schedule; doing so wakes its waiting polls to re-read their
    // queues, which may answer empty just before the send (a client syncs again at once).
    if (woken.to_device.events.length === 0) woken = await bobOnB.sync({ since: woken.next_batch, timeout: 30_000 });
    console.warn(`a long-poll on the other process woke ${Date.now() - sentAt} ms after the send`);
    expect(woken.to_device.events.map((e) => e.content)).toEqual([{ n: 2 }]);
    expect(Date.now() - sentAt).toBeLessThan(25_000);
    expect((await a.app.request('/health/ready')).status).toBe(200);
  }, 60_000);
});
