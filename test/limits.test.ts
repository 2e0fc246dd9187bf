import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deviceInbox, federationOutbox } from '../src/storage/schema.ts';
import { TestClock } from '../src/testing/test-clock.ts';
import { TestClient } from './support/client.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

let t: TestApp;
// Rate limits, maintenance and TTLs are logic on the server's clock: the tests move it.
const clock = new TestClock();

beforeAll(async () => {
  t = await startTestApp(
    {
      rate_limits: { send_to_device: { per_second: 2, burst_count: 3 } },
      limits: { device_queue_max: 5, to_device_ttl_hours: 1, maintenance_interval_s: 60 },
      // dead.test refuses connections: what is sent to it stays queued.
      federation: { allow_http: true, static_routes: { 'dead.test': 'http://127.0.0.1:9' }, destination_queue_max: 3 },
    },
    undefined,
    { clock },
  );
});
afterAll(() => t.close());

describe('limits', () => {
  it('rate-limits sendToDevice per (user, device) with 429 M_LIMIT_EXCEEDED, retry_after_ms and Retry-After', async () => {
    const a = await TestClient.register(t.app, 'limited');
    const other = await TestClient.login(t.app, 'limited');
    const send = (c: TestClient) => c.request('PUT', `/v3/sendToDevice/m.rl/${Math.random()}`, { messages: {} });
    for (let i = 0; i < 3; i++) expect((await send(a)).status).toBe(200);
    const limited = await send(a);
    expect(limited.status).toBe(429);
    const body = (await limited.json()) as { errcode: string; retry_after_ms: number };
    expect(body.errcode).toBe('M_LIMIT_EXCEEDED');
    expect(body.retry_after_ms).toBeGreaterThan(0);
    expect(body.retry_after_ms).toBeLessThanOrEqual(500);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // Another device of the same user has its own bucket.
    expect((await send(other)).status).toBe(200);
    // Not a millisecond before retry_after_ms, the first device may send again.
    await clock.advance(body.retry_after_ms - 1);
    expect((await send(a)).status).toBe(429);
    await clock.advance(1);
    expect((await send(a)).status).toBe(200);
  });

  it('caps each device queue, dropping the oldest beyond the cap, counted', async () => {
    const target = await TestClient.register(t.app, 'capped');
    const senders = await Promise.all(Array.from({ length: 4 }, (_, i) => TestClient.register(t.app, `capsender${i}`)));
    for (let i = 0; i < 8; i++) {
      const sender = senders[i % 4] as TestClient;
      expect((await sender.sendToDevice('m.cap', { [target.userId]: { [target.deviceId]: { i } } })).status).toBe(200);
    }
    const before = t.services.counters.get('to_device_dropped_total', { reason: 'queue_cap' });
    const result = await t.maintenance.runOnce();
    expect(result.queueCap).toBe(3);
    expect(t.services.counters.get('to_device_dropped_total', { reason: 'queue_cap' })).toBe(before + 3);
    const s = await target.sync();
    expect(s.to_device.events.map((e) => e.content.i)).toEqual([3, 4, 5, 6, 7]);
  });

  it('runs maintenance at start and then every maintenance_interval_s, until stopped', async () => {
    const target = await TestClient.register(t.app, 'periodic');
    const sender = await TestClient.register(t.app, 'periodicsender');
    const sendOne = async (tag: string) => expect((await sender.sendToDevice('m.cap', { [target.userId]: { [target.deviceId]: { tag } } })).status).toBe(200);
    const depth = async () => (await t.database.db.select().from(deviceInbox)).filter((r) => r.userId === target.userId).length;
    // n messages, one request each, 500 ms of the clock apart.
    const fill = async (n: number) => {
      for (let i = 0; i < n; i++) {
        await sendOne(`m${i}`);
        // Past the rate limit's refill, so that sending is never what is being tested here.
        await clock.advance(500);
      }
    };
    // Two over the cap of 5.
    await fill(7);
    clock.settle = () => t.maintenance.idle();
    t.maintenance.start();
    try {
      await t.maintenance.idle();
      expect(await depth()).toBe(5);
      await fill(2);
      expect(await depth()).toBe(7);
      // fill() moved the clock 1 s; the next run is 60 s after the first.
      await clock.advance(60_000 - 1_000 - 1);
      expect(await depth()).toBe(7);
      await clock.advance(1);
      expect(await depth()).toBe(5);
    } finally {
      t.maintenance.stop();
      clock.settle = async () => {};
    }
    await fill(2);
    await clock.advance(120_000);
    expect(await depth()).toBe(7);
  });

  it('caps each federation destination\'s queue, dropping the oldest beyond the cap, counted', async () => {
    const sender = await TestClient.register(t.app, 'fedcap');
    // One request (this app's rate limit allows 3): five devices, queued in this order.
    const five = Object.fromEntries(Array.from({ length: 5 }, (_, i) => [`D${i}`, { i }]));
    expect((await sender.sendToDevice('m.cap', { '@x:dead.test': five })).status).toBe(200);
    const before = t.services.counters.get('to_device_dropped_total', { reason: 'federation_queue_cap' });
    const result = await t.maintenance.runOnce();
    expect(result.federationQueueCap).toBe(2);
    expect(t.services.counters.get('to_device_dropped_total', { reason: 'federation_queue_cap' })).toBe(before + 2);
    const left = await t.database.db.select().from(federationOutbox);
    expect(left.filter((r) => r.destination === 'dead.test').map((r) => (JSON.parse(r.content) as { i: number }).i)).toEqual([2, 3, 4]);
  });

  it('drops undelivered messages older than the TTL, counted', async () => {
    const target = await TestClient.register(t.app, 'ttl');
    const sender = await TestClient.register(t.app, 'ttlsender');
    await sender.sendToDevice('m.old', { [target.userId]: { [target.deviceId]: { old: true } } });
    const before = t.services.counters.get('to_device_dropped_total', { reason: 'ttl' });
    // Within the hour it stays; two hours later it goes.
    expect((await t.maintenance.runOnce()).ttl).toBe(0);
    await clock.advance(2 * 3600_000);
    const result = await t.maintenance.runOnce();
    expect(result.ttl).toBeGreaterThanOrEqual(1);
    expect(t.services.counters.get('to_device_dropped_total', { reason: 'ttl' })).toBe(before + result.ttl);
    expect((await target.sync()).to_device.events).toEqual([]);
    const rows = await t.database.db.select().from(deviceInbox);
    expect(rows.filter((r) => r.userId === target.userId)).toEqual([]);
  });
});

describe('access', () => {
  it('lets a token read only its own device\'s queue', async () => {
    const owner = await TestClient.register(t.app, 'owner', { deviceId: 'MINE' });
    const snoop = await TestClient.register(t.app, 'snoop');
    const sender = await TestClient.register(t.app, 'accsender');
    await sender.sendToDevice('m.private', { [owner.userId]: { MINE: { secret: 1 } } });
    expect((await snoop.sync()).to_device.events).toEqual([]);
    // Even asking for the owner's device by path is not a thing: devices are per token.
    expect((await snoop.json('GET', '/v3/devices/MINE')).status).toBe(404);
    expect((await owner.sync()).to_device.events).toHaveLength(1);
  });
});
