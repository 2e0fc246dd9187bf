import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { federationOutbox, deviceInbox } from '../src/storage/schema.ts';
import { TestClient } from './support/client.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

let t: TestApp;
let alice: TestClient;
let bob: TestClient;
let bob2: TestClient;
let carol: TestClient;

beforeAll(async () => {
  t = await startTestApp();
  alice = await TestClient.register(t.app, 'alice');
  bob = await TestClient.register(t.app, 'bob', { deviceId: 'BOB1' });
  bob2 = await TestClient.login(t.app, 'bob', { deviceId: 'BOB2' });
  carol = await TestClient.register(t.app, 'carol');
});
afterAll(() => t.close());

async function drain(client: TestClient): Promise<void> {
  const first = await client.sync();
  await client.sync({ since: first.next_batch });
}

describe('sendToDevice delivery', () => {
  it('delivers a message to the sender\'s own device', async () => {
    const res = await alice.sendToDevice('m.test', { [alice.userId]: { [alice.deviceId]: { hello: 'me' } } });
    expect(res).toEqual({ status: 200, body: {} });
    const sync = await alice.sync();
    expect(sync.to_device.events).toEqual([{ sender: alice.userId, type: 'm.test', content: { hello: 'me' } }]);
    await alice.sync({ since: sync.next_batch });
  });

  it('gives two users each only their own content', async () => {
    await drain(bob);
    await drain(carol);
    await alice.sendToDevice('m.secret', {
      [bob.userId]: { BOB1: { for: 'bob' } },
      [carol.userId]: { [carol.deviceId]: { for: 'carol' } },
    });
    const b = await bob.sync();
    const c = await carol.sync();
    expect(b.to_device.events).toEqual([{ sender: alice.userId, type: 'm.secret', content: { for: 'bob' } }]);
    expect(c.to_device.events).toEqual([{ sender: alice.userId, type: 'm.secret', content: { for: 'carol' } }]);
    // bob's other device got nothing
    const b2 = await bob2.sync();
    expect(b2.to_device.events.filter((e) => e.type === 'm.secret')).toEqual([]);
    await bob.sync({ since: b.next_batch });
    await carol.sync({ since: c.next_batch });
    await bob2.sync({ since: b2.next_batch });
  });

  it('expands * to every device of the user, each once', async () => {
    await drain(bob);
    await drain(bob2);
    await alice.sendToDevice('m.star', { [bob.userId]: { '*': { n: 1 } } });
    for (const device of [bob, bob2]) {
      const s = await device.sync();
      expect(s.to_device.events).toEqual([{ sender: alice.userId, type: 'm.star', content: { n: 1 } }]);
      const again = await device.sync({ since: s.next_batch });
      expect(again.to_device.events).toEqual([]);
    }
  });

  it('delivers a retried txn id once, with the same response', async () => {
    await drain(carol);
    const first = await alice.sendToDevice('m.once', { [carol.userId]: { [carol.deviceId]: { n: 1 } } }, 'same-txn');
    const second = await alice.sendToDevice('m.once', { [carol.userId]: { [carol.deviceId]: { n: 2 } } }, 'same-txn');
    expect(first).toEqual({ status: 200, body: {} });
    expect(second).toEqual(first);
    const s = await carol.sync();
    expect(s.to_device.events).toEqual([{ sender: alice.userId, type: 'm.once', content: { n: 1 } }]);
    await carol.sync({ since: s.next_batch });
  });

  it('scopes txn ids by event type and by device', async () => {
    await drain(carol);
    await alice.sendToDevice('m.a', { [carol.userId]: { [carol.deviceId]: {} } }, 'scoped');
    await alice.sendToDevice('m.b', { [carol.userId]: { [carol.deviceId]: {} } }, 'scoped');
    const alice2 = await TestClient.login(t.app, 'alice');
    await alice2.sendToDevice('m.a', { [carol.userId]: { [carol.deviceId]: {} } }, 'scoped');
    const s = await carol.sync();
    expect(s.to_device.events.map((e) => e.type)).toEqual(['m.a', 'm.b', 'm.a']);
    await carol.sync({ since: s.next_batch });
  });

  it('handles concurrent duplicates of one txn id as one request', async () => {
    await drain(carol);
    const results = await Promise.all(
      Array.from({ length: 8 }, () => alice.sendToDevice('m.race', { [carol.userId]: { [carol.deviceId]: { x: 1 } } }, 'race')),
    );
    for (const r of results) expect(r).toEqual({ status: 200, body: {} });
    const s = await carol.sync();
    expect(s.to_device.events.filter((e) => e.type === 'm.race')).toHaveLength(1);
    await carol.sync({ since: s.next_batch });
  });

  it('skips invalid user IDs and unknown users/devices with a 200, counting them', async () => {
    await drain(carol);
    const before = {
      invalid: t.services.counters.get('to_device_dropped_total', { reason: 'invalid_user' }),
      user: t.services.counters.get('to_device_dropped_total', { reason: 'unknown_user' }),
      device: t.services.counters.get('to_device_dropped_total', { reason: 'unknown_device' }),
    };
    const res = await alice.sendToDevice('m.skip', {
      'not-a-user-id': { X: {} },
      [`@nobody:${SERVER_NAME}`]: { X: {} },
      [carol.userId]: { NOSUCHDEVICE: {}, [carol.deviceId]: { ok: true } },
    });
    expect(res.status).toBe(200);
    expect(t.services.counters.get('to_device_dropped_total', { reason: 'invalid_user' })).toBe(before.invalid + 1);
    expect(t.services.counters.get('to_device_dropped_total', { reason: 'unknown_user' })).toBe(before.user + 1);
    expect(t.services.counters.get('to_device_dropped_total', { reason: 'unknown_device' })).toBe(before.device + 1);
    const s = await carol.sync();
    expect(s.to_device.events).toEqual([{ sender: alice.userId, type: 'm.skip', content: { ok: true } }]);
    await carol.sync({ since: s.next_batch });
  });

  it('counts a request naming only an unknown device of an existing user as unknown_device', async () => {
    const before = {
      device: t.services.counters.get('to_device_dropped_total', { reason: 'unknown_device' }),
      user: t.services.counters.get('to_device_dropped_total', { reason: 'unknown_user' }),
    };
    expect((await alice.sendToDevice('m.skip', { [carol.userId]: { NOSUCHDEVICE: {} } })).status).toBe(200);
    expect(t.services.counters.get('to_device_dropped_total', { reason: 'unknown_device' })).toBe(before.device + 1);
    expect(t.services.counters.get('to_device_dropped_total', { reason: 'unknown_user' })).toBe(before.user);
  });

  it('keeps messages for remote users in the durable federation outbox', async () => {
    const res = await alice.sendToDevice('m.remote', {
      '@dave:remote.example': { DAVE1: { a: 1 }, '*': { b: 2 } },
      '@erin:other.example:8448': { E: { c: 3 } },
    });
    expect(res.status).toBe(200);
    const rows = await t.database.db.select().from(federationOutbox);
    const mine = rows.filter((r) => r.type === 'm.remote');
    expect(mine.map((r) => [r.destination, r.userId, r.deviceId, JSON.parse(r.content)]).sort()).toEqual(
      [
        ['other.example:8448', '@erin:other.example:8448', 'E', { c: 3 }],
        ['remote.example', '@dave:remote.example', '*', { b: 2 }],
        ['remote.example', '@dave:remote.example', 'DAVE1', { a: 1 }],
      ].sort(),
    );
    for (const r of mine) expect(r.sender).toBe(alice.userId);
  });

  it('rejects an oversized message without storing any message of the request', async () => {
    await drain(carol);
    const big = 'x'.repeat(65_537);
    const res = await alice.sendToDevice('m.big', {
      [carol.userId]: { [carol.deviceId]: { small: true } },
      [bob.userId]: { BOB1: { big } },
    });
    expect(res.status).toBe(413);
    expect(res.body.errcode).toBe('M_TOO_LARGE');
    const s = await carol.sync();
    expect(s.to_device.events).toEqual([]);
  });

  it('accepts content of exactly 65,536 bytes of canonical JSON', async () => {
    await drain(carol);
    // {"p":"…"} is 8 bytes of framing
    const content = { p: 'y'.repeat(65_536 - 8) };
    const res = await alice.sendToDevice('m.edge', { [carol.userId]: { [carol.deviceId]: content } });
    expect(res.status).toBe(200);
    const s = await carol.sync();
    expect(s.to_device.events[0]?.content).toEqual(content);
    await carol.sync({ since: s.next_batch });
  });

  it('stores all messages of a request in one transaction (nothing partial on failure)', async () => {
    const before = await t.database.db.select().from(deviceInbox);
    const res = await alice.sendToDevice('m.float', {
      [carol.userId]: { [carol.deviceId]: { ok: 1 } },
      [bob.userId]: { BOB1: { bad: 1.5 } },
    });
    expect(res.status).toBe(400);
    expect(res.body.errcode).toBe('M_BAD_JSON');
    const after = await t.database.db.select().from(deviceInbox);
    expect(after.length).toBe(before.length);
  });
});

describe('sendToDevice errors', () => {
  const path = '/v3/sendToDevice/m.test/err';

  it('401 M_MISSING_TOKEN without a token', async () => {
    const res = await t.app.request(`/_matrix/client${path}`, { method: 'PUT', body: '{"messages":{}}' });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ errcode: 'M_MISSING_TOKEN' });
  });

  it('401 M_UNKNOWN_TOKEN with a bad token', async () => {
    const res = await t.app.request(`/_matrix/client${path}`, {
      method: 'PUT',
      headers: { authorization: 'Bearer nope' },
      body: '{"messages":{}}',
    });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ errcode: 'M_UNKNOWN_TOKEN' });
  });

  it.each([
    ['not json', 'this is not json', 400, 'M_NOT_JSON'],
    ['empty body', '', 400, 'M_NOT_JSON'],
    ['a JSON array', '[]', 400, 'M_BAD_JSON'],
    ['a JSON string', '"hi"', 400, 'M_BAD_JSON'],
    ['missing messages', '{}', 400, 'M_MISSING_PARAM'],
    ['messages not an object', '{"messages":[]}', 400, 'M_BAD_JSON'],
    ['user entry not an object', '{"messages":{"@a:b":1}}', 400, 'M_BAD_JSON'],
    ['content not an object', '{"messages":{"@a:b":{"D":"x"}}}', 400, 'M_BAD_JSON'],
    ['content an array', '{"messages":{"@a:b":{"D":[]}}}', 400, 'M_BAD_JSON'],
    ['device map an array', '{"messages":{"@a:b":[{}]}}', 400, 'M_BAD_JSON'],
  ])('%s → %s', async (_name, body, status, errcode) => {
    const res = await alice.request('PUT', path, body);
    expect(res.status).toBe(status);
    const json = (await res.json()) as Record<string, unknown>;
    expect(json.errcode).toBe(errcode);
    expect(typeof json.error).toBe('string');
  });

  it('413 M_TOO_LARGE for a body over the request cap', async () => {
    const small = await startTestApp({ limits: { max_request_bytes: 2048 } });
    try {
      const u = await TestClient.register(small.app, 'u');
      const res = await u.request('PUT', path, JSON.stringify({ messages: { [u.userId]: { [u.deviceId]: { p: 'z'.repeat(4000) } } } }));
      expect(res.status).toBe(413);
      expect(await res.json()).toMatchObject({ errcode: 'M_TOO_LARGE' });
    } finally {
      await small.close();
    }
  });
});
