import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deviceInbox, federationOutbox } from '../src/storage/schema.ts';
import { TestClient } from './support/client.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

let t: TestApp;

beforeAll(async () => {
  t = await startTestApp({
    rate_limits: { send_to_device: { per_second: 2, burst_count: 3 } },
    limits: { device_queue_max: 5, to_device_ttl_hours: 1 },
    // dead.test refuses connections: what is sent to it stays queued.
    federation: { allow_http: true, static_routes: { 'dead.test': 'http://127.0.0.1:9' }, destination_queue_max: 3 },
  });
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
    // After retry_after_ms, the first device may send again.
    await new Promise((r) => setTimeout(r, body.retry_after_ms + 20));
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
    // Two hours later, as far as maintenance is concerned.
    const result = await t.maintenance.runOnce(Date.now() + 2 * 3600_000);
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
