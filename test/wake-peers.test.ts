import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../src/app.ts';
import { parseConfig } from '../src/config/config.ts';
import { createLogger } from '../src/logger.ts';
import { Notifier } from '../src/runtime/notifier.ts';
import { PgWakeups, WAKE_CHANNEL, type WakeupTiming } from '../src/runtime/pg-wakeups.ts';
import { openDatabase, type Database } from '../src/storage/drivers/database.ts';
import { TestClient } from './support/client.ts';
import { createPostgresDatabaseUrl, usingPostgres } from './support/test-database.ts';

/** Short enough for a test: a process counts as alone 400 ms after it last heard another, and after its first 200 ms. */
const TIMING: WakeupTiming = { probeMs: 150, peerTtlMs: 400, startupMs: 200, recheckMs: 150 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A process alone on its PostgreSQL database skips the wake-up NOTIFY of its sends
 * (PgWakeups.othersMayListen); processes find each other through their probes. PostgreSQL only.
 */
describe.skipIf(!usingPostgres())('wake-up NOTIFYs only when another process may listen', () => {
  let pg: { url: string; drop(): Promise<void> };
  let raw: postgres.Sql;
  const heard: { from?: string; devices?: unknown; hello?: boolean }[] = [];
  const opened: { app?: App; database?: Database; wakeups?: PgWakeups }[] = [];

  async function instance(): Promise<App> {
    const database = await openDatabase({ kind: 'postgres', url: pg.url, poolSize: 3 });
    const app = createApp({ config: parseConfig({ server_name: 'peers.test' }), database, wakeupTiming: TIMING });
    await app.start();
    opened.push({ app, database });
    return app;
  }

  beforeAll(async () => {
    pg = (await createPostgresDatabaseUrl()) as { url: string; drop(): Promise<void> };
    // A bare LISTEN, not a process: it announces nothing, so it is no reason to NOTIFY.
    raw = postgres(pg.url, { max: 1, onnotice: () => {} });
    await raw.listen(WAKE_CHANNEL, (payload) => heard.push(JSON.parse(payload) as (typeof heard)[number]));
  }, 60_000);

  afterAll(async () => {
    await stopAll();
    await raw?.end({ timeout: 1 });
    await pg?.drop();
  });

  it('sends without a NOTIFY when alone, and a process that starts later still has its long-polls woken at once', async () => {
    const a = await instance();
    const sender = await TestClient.register(a.app, 'sender');
    const bob = await TestClient.register(a.app, 'bob');
    // Past the start-up window, with no other process heard: alone.
    await sleep(TIMING.peerTtlMs + 200);
    heard.length = 0;
    expect((await sender.sendToDevice('m.alone', { [bob.userId]: { [bob.deviceId]: { n: 1 } } })).status).toBe(200);
    await sleep(200);
    expect(heard.filter((p) => p.devices !== undefined)).toEqual([]);

    const b = await instance();
    const bobOnB = new TestClient(b.app, bob.userId, bob.deviceId, bob.token);
    const initial = await bobOnB.sync();
    expect(initial.to_device.events.map((e) => e.type)).toEqual(['m.alone']);
    const polling = bobOnB.sync({ since: initial.next_batch, timeout: 20_000 });
    await sleep(50);
    const sentAt = Date.now();
    expect((await sender.sendToDevice('m.joined', { [bob.userId]: { [bob.deviceId]: { n: 2 } } })).status).toBe(200);
    const woken = await polling;
    expect(woken.to_device.events).toEqual([{ sender: sender.userId, type: 'm.joined', content: { n: 2 } }]);
    expect(Date.now() - sentAt).toBeLessThan(1_000);
    // Both know each other now: A's sends NOTIFY again.
    heard.length = 0;
    expect((await sender.sendToDevice('m.both', { [bob.userId]: { [bob.deviceId]: { n: 3 } } })).status).toBe(200);
    await sleep(200);
    expect(heard.some((p) => p.devices !== undefined)).toBe(true);
    await stopAll();
  });

  it('wakes, once it first hears another process, the parked long-polls whose devices got a message without a NOTIFY', async () => {
    const log = createLogger('silent');
    const a = await instance();
    const bob = await TestClient.register(a.app, 'bob2');
    const carol = await TestClient.register(a.app, 'carol2');
    const bobPolls = bob.sync({ since: (await bob.sync()).next_batch, timeout: 20_000 });
    const carolPolls = carol.sync({ since: (await carol.sync()).next_batch, timeout: 4_000 });
    await sleep(TIMING.peerTtlMs + 200);
    // A message stored by a process that believed itself alone: queued, and no NOTIFY about it.
    await raw`insert into device_inbox (user_id, device_id, sender, type, content, received_ts)
      values (${bob.userId}, ${bob.deviceId}, '@x:peers.test', 'm.unannounced', '{"n":1}', ${Date.now()})`;
    await sleep(300);
    // Then that process is heard for the first time (a bare PgWakeups saying hello).
    const other = new PgWakeups(raw, new Notifier(), log, 'other', raw, TIMING);
    opened.push({ wakeups: other });
    const heardAt = Date.now();
    await other.start();
    const woken = await bobPolls;
    expect(woken.to_device.events).toEqual([{ sender: '@x:peers.test', type: 'm.unannounced', content: { n: 1 } }]);
    expect(Date.now() - heardAt).toBeGreaterThanOrEqual(TIMING.recheckMs);
    expect(Date.now() - heardAt).toBeLessThan(2_000);
    // A poll whose device got nothing keeps waiting until its timeout.
    const started = Date.now();
    expect((await carolPolls).to_device.events).toEqual([]);
    expect(Date.now() - started).toBeGreaterThan(1_500);
  });

  async function stopAll(): Promise<void> {
    for (const o of opened.splice(0).reverse()) {
      await o.wakeups?.stop();
      await o.app?.stop();
      await o.database?.close();
    }
  }
});
