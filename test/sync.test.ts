import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClient } from './support/client.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

let t: TestApp;
let alice: TestClient;

beforeAll(async () => {
  t = await startTestApp();
  alice = await TestClient.register(t.app, 'alice');
});
afterAll(() => t.close());

async function fresh(name: string): Promise<TestClient> {
  return TestClient.register(t.app, name);
}

async function sendN(to: TestClient, n: number, type = 'm.seq'): Promise<void> {
  for (let i = 0; i < n; i += 50) {
    const batch = Array.from({ length: Math.min(50, n - i) }, (_, k) => i + k);
    await Promise.all(
      batch.map((k) => alice.sendToDevice(type, { [to.userId]: { [to.deviceId]: { k } } }, `seq-${to.userId}-${type}-${k}`)),
    );
  }
}

describe('/sync to-device', () => {
  it('answers in the shape of a real homeserver', async () => {
    const u = await fresh('shape');
    const s = await u.sync();
    expect(s).toMatchObject({
      next_batch: expect.any(String),
      rooms: { join: {}, invite: {}, leave: {} },
      account_data: { events: [] },
      presence: { events: [] },
      to_device: { events: [] },
      device_lists: { changed: [], left: [] },
      device_one_time_keys_count: {},
    });
  });

  it('replays the same messages for a replayed since, and only newer ones after the ack', async () => {
    const bob = await fresh('replay');
    await alice.sendToDevice('m.one', { [bob.userId]: { [bob.deviceId]: { n: 1 } } });
    const s1 = await bob.sync();
    expect(s1.to_device.events.map((e) => e.content)).toEqual([{ n: 1 }]);
    // The response was "lost": the client syncs again without the new token.
    const s1again = await bob.sync();
    expect(s1again.to_device.events.map((e) => e.content)).toEqual([{ n: 1 }]);
    expect(s1again.next_batch).toBe(s1.next_batch);

    await alice.sendToDevice('m.two', { [bob.userId]: { [bob.deviceId]: { n: 2 } } });
    const s2 = await bob.sync({ since: s1.next_batch });
    expect(s2.to_device.events.map((e) => e.content)).toEqual([{ n: 2 }]);
    // Replaying s1's token again still gives n:2 (not yet acknowledged), never n:1.
    const s2again = await bob.sync({ since: s1.next_batch });
    expect(s2again.to_device.events.map((e) => e.content)).toEqual([{ n: 2 }]);
    const s3 = await bob.sync({ since: s2.next_batch });
    expect(s3.to_device.events).toEqual([]);
    expect(s3.next_batch).toBe(s2.next_batch);
  });

  it('returns 150 queued messages as 100 then 50, in order, the second sync at once', async () => {
    const bob = await fresh('backlog');
    await sendN(bob, 150);
    const s1 = await bob.sync();
    expect(s1.to_device.events).toHaveLength(100);
    const started = Date.now();
    const s2 = await bob.sync({ since: s1.next_batch, timeout: 10_000 });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(s2.to_device.events).toHaveLength(50);
    const ks = [...s1.to_device.events, ...s2.to_device.events].map((e) => e.content.k as number);
    // Sent concurrently within batches of 50; the server order is its arrival order, so every
    // message appears exactly once.
    expect([...ks].sort((a, b) => a - b)).toEqual(Array.from({ length: 150 }, (_, i) => i));
    const s3 = await bob.sync({ since: s2.next_batch });
    expect(s3.to_device.events).toEqual([]);
  });

  it('honours a configured per-response limit', async () => {
    const small = await startTestApp({ limits: { sync_to_device_limit: 3 } });
    try {
      const a = await TestClient.register(small.app, 'a');
      for (let i = 0; i < 5; i++) await a.sendToDevice('m.n', { [a.userId]: { [a.deviceId]: { i } } });
      const s1 = await a.sync();
      expect(s1.to_device.events.map((e) => e.content.i)).toEqual([0, 1, 2]);
      const s2 = await a.sync({ since: s1.next_batch });
      expect(s2.to_device.events.map((e) => e.content.i)).toEqual([3, 4]);
    } finally {
      await small.close();
    }
  });

  it('wakes a long-poll when a message for this device arrives 100 ms later', async () => {
    const bob = await fresh('longpoll');
    const initial = await bob.sync();
    const started = Date.now();
    const polling = bob.sync({ since: initial.next_batch, timeout: 20_000 });
    await new Promise((r) => setTimeout(r, 100));
    await alice.sendToDevice('m.wake', { [bob.userId]: { [bob.deviceId]: { hi: true } } });
    const s = await polling;
    const elapsed = Date.now() - started;
    expect(s.to_device.events).toEqual([{ sender: alice.userId, type: 'm.wake', content: { hi: true } }]);
    expect(elapsed).toBeGreaterThanOrEqual(100);
    expect(elapsed).toBeLessThan(10_000);
  });

  it('does not wake a long-poll for a message to another device', async () => {
    const bob = await fresh('nowake');
    const other = await TestClient.login(t.app, 'nowake');
    const initial = await bob.sync();
    const started = Date.now();
    const polling = bob.sync({ since: initial.next_batch, timeout: 600 });
    await alice.sendToDevice('m.other', { [other.userId]: { [other.deviceId]: {} } });
    const s = await polling;
    expect(s.to_device.events).toEqual([]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(550);
  });

  it('returns after the timeout when nothing arrives', async () => {
    const bob = await fresh('timeout');
    const initial = await bob.sync();
    const started = Date.now();
    const s = await bob.sync({ since: initial.next_batch, timeout: 300 });
    expect(s.to_device.events).toEqual([]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(280);
  });

  it('rejects a malformed since with 400 M_INVALID_PARAM', async () => {
    for (const since of ['garbage', 'v1.', 'v1.-5', 'v2.3', 'v1.1e3']) {
      const res = await alice.json('GET', `/v3/sync?since=${encodeURIComponent(since)}`);
      expect(res.status).toBe(400);
      expect(res.body.errcode).toBe('M_INVALID_PARAM');
    }
  });

  it('rejects bad timeout, full_state and set_presence values', async () => {
    for (const q of ['timeout=-1', 'timeout=abc', 'full_state=maybe', 'set_presence=busy']) {
      const res = await alice.json('GET', `/v3/sync?${q}`);
      expect(res.status).toBe(400);
      expect(res.body.errcode).toBe('M_INVALID_PARAM');
    }
  });

  it('does not lose messages when given a token from the future', async () => {
    const bob = await fresh('future');
    await alice.sendToDevice('m.keep', { [bob.userId]: { [bob.deviceId]: { keep: 1 } } });
    const s = await bob.sync({ since: 'v1.999999999999' });
    expect(s.to_device.events.map((e) => e.content)).toEqual([{ keep: 1 }]);
    const again = await bob.sync();
    expect(again.to_device.events.map((e) => e.content)).toEqual([{ keep: 1 }]);
  });

  it('accepts tokens with further stream positions appended', async () => {
    const bob = await fresh('tokenroom');
    const s = await bob.sync();
    const res = await bob.json('GET', `/v3/sync?since=${s.next_batch}.17.4`);
    expect(res.status).toBe(200);
  });

  it('accepts filters inline or by uploaded ID, and rejects unknown ones', async () => {
    const up = await alice.json<{ filter_id: string }>('POST', `/v3/user/${encodeURIComponent(alice.userId)}/filter`, {
      room: { timeline: { limit: 1 } },
    });
    expect(up.status).toBe(200);
    const got = await alice.json('GET', `/v3/user/${encodeURIComponent(alice.userId)}/filter/${up.body.filter_id}`);
    expect(got.body).toEqual({ room: { timeline: { limit: 1 } } });
    expect((await alice.json('GET', `/v3/sync?filter=${up.body.filter_id}`)).status).toBe(200);
    expect((await alice.json('GET', `/v3/sync?filter=${encodeURIComponent('{"room":{}}')}`)).status).toBe(200);
    const unknown = await alice.json('GET', '/v3/sync?filter=424242');
    expect(unknown).toMatchObject({ status: 400, body: { errcode: 'M_INVALID_PARAM' } });
    const badInline = await alice.json('GET', `/v3/sync?filter=${encodeURIComponent('{nope')}`);
    expect(badInline).toMatchObject({ status: 400, body: { errcode: 'M_INVALID_PARAM' } });
    const otherUser = await alice.json('POST', '/v3/user/%40someone%3Aelse/filter', {});
    expect(otherUser).toMatchObject({ status: 403, body: { errcode: 'M_FORBIDDEN' } });
  });
});

describe('sliding sync to-device extension (MSC4186)', () => {
  const path = '/unstable/org.matrix.simplified_msc3575/sync';

  it('shares the queue and the acknowledgement rule with /sync', async () => {
    const bob = await fresh('slider');
    await alice.sendToDevice('m.ss', { [bob.userId]: { [bob.deviceId]: { n: 1 } } });
    const r1 = await bob.json<{ pos: string; extensions: { to_device: { next_batch: string; events: unknown[] } } }>(
      'POST',
      path,
      { extensions: { to_device: { enabled: true } } },
    );
    expect(r1.status).toBe(200);
    expect(r1.body.extensions.to_device.events).toEqual([{ sender: alice.userId, type: 'm.ss', content: { n: 1 } }]);
    // Still there for /sync until acknowledged.
    expect((await bob.sync()).to_device.events).toHaveLength(1);

    await alice.sendToDevice('m.ss', { [bob.userId]: { [bob.deviceId]: { n: 2 } } });
    const r2 = await bob.json<{ extensions: { to_device: { next_batch: string; events: { content: unknown }[] } } }>(
      'POST',
      path,
      { extensions: { to_device: { enabled: true, since: r1.body.extensions.to_device.next_batch } } },
    );
    expect(r2.body.extensions.to_device.events.map((e) => e.content)).toEqual([{ n: 2 }]);
    const s = await bob.sync();
    expect(s.to_device.events.map((e) => e.content)).toEqual([{ n: 2 }]);
  });

  it('honours the extension limit and rejects a malformed since', async () => {
    const bob = await fresh('sslimit');
    for (let i = 0; i < 3; i++) await alice.sendToDevice('m.l', { [bob.userId]: { [bob.deviceId]: { i } } });
    const r = await bob.json<{ extensions: { to_device: { events: unknown[] } } }>('POST', path, {
      extensions: { to_device: { enabled: true, limit: 2 } },
    });
    expect(r.body.extensions.to_device.events).toHaveLength(2);
    const bad = await bob.json('POST', path, { extensions: { to_device: { enabled: true, since: 'zzz' } } });
    expect(bad).toMatchObject({ status: 400, body: { errcode: 'M_INVALID_PARAM' } });
  });

  it('long-polls with pos and timeout', async () => {
    const bob = await fresh('sspoll');
    const r1 = await bob.json<{ pos: string; extensions: { to_device: { next_batch: string } } }>('POST', path, {
      extensions: { to_device: { enabled: true } },
    });
    const polling = bob.json<{ extensions: { to_device: { events: { content: unknown }[] } } }>(
      'POST',
      `${path}?pos=${r1.body.pos}&timeout=20000`,
      { extensions: { to_device: { enabled: true, since: r1.body.extensions.to_device.next_batch } } },
    );
    await new Promise((r) => setTimeout(r, 50));
    await alice.sendToDevice('m.sswake', { [bob.userId]: { [bob.deviceId]: { woke: true } } });
    const r2 = await polling;
    expect(r2.body.extensions.to_device.events.map((e) => e.content)).toEqual([{ woke: true }]);
  });
});
