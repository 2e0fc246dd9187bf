import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClient } from './support/client.ts';
import { deviceKeysFor, oneTimeKeys } from './support/e2ee-keys.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

type Json = Record<string, unknown>;
const PREFIX = '/unstable/org.matrix.msc3814.v1/dehydrated_device';

let t: TestApp;
let alice: TestClient;
let bob: TestClient;

beforeAll(async () => {
  t = await startTestApp({ limits: { sync_to_device_limit: 100 } });
  alice = await TestClient.register(t.app, 'alice', { deviceId: 'ALICE1' });
  bob = await TestClient.register(t.app, 'bob', { deviceId: 'BOB1' });
});
afterAll(() => t.close());

describe('MSC3814 dehydrated devices', () => {
  it('answers 404 M_NOT_FOUND when there is none (how clients detect support)', async () => {
    expect(await alice.json('GET', PREFIX)).toMatchObject({ status: 404, body: { errcode: 'M_NOT_FOUND' } });
    expect(await alice.json('DELETE', PREFIX)).toMatchObject({ status: 404, body: { errcode: 'M_NOT_FOUND' } });
  });

  it('stores the device with its keys, queues its messages, and pages them out with next_batch', async () => {
    const { keys, key } = deviceKeysFor(alice.userId, 'DEHYDRATED1');
    const put = await alice.json('PUT', PREFIX, {
      device_id: 'DEHYDRATED1',
      device_data: { algorithm: 'org.matrix.msc3814.v2', device_pickle: 'opaque' },
      initial_device_display_name: 'Dehydrated device',
      device_keys: keys,
      one_time_keys: oneTimeKeys(alice.userId, key, 5),
    });
    expect(put).toEqual({ status: 200, body: { device_id: 'DEHYDRATED1' } });
    expect(await alice.json('GET', PREFIX)).toEqual({ status: 200, body: { device_id: 'DEHYDRATED1', device_data: { algorithm: 'org.matrix.msc3814.v2', device_pickle: 'opaque' } } });
    // Others see it as one of alice's devices and can claim its keys.
    const q = await bob.json<{ device_keys: Record<string, Record<string, Json>> }>('POST', '/v3/keys/query', { device_keys: { [alice.userId]: [] } });
    expect(q.body.device_keys[alice.userId]?.DEHYDRATED1).toMatchObject({ unsigned: { device_display_name: 'Dehydrated device' } });
    const claimed = await bob.json<{ one_time_keys: Record<string, Record<string, Json>> }>('POST', '/v3/keys/claim', { one_time_keys: { [alice.userId]: { DEHYDRATED1: 'signed_curve25519' } } });
    expect(Object.keys(claimed.body.one_time_keys[alice.userId]?.DEHYDRATED1 ?? {})).toHaveLength(1);

    // 150 messages to it: two pages, the second acknowledging the first, then none left.
    for (let i = 0; i < 150; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => bob.sendToDevice('m.test', { [alice.userId]: { DEHYDRATED1: { n: i + j } } }, `d${i + j}`)));
    }
    const first = await alice.json<{ events: { content: { n: number } }[]; next_batch?: string }>('GET', `${PREFIX}/DEHYDRATED1/events`);
    expect(first.body.events).toHaveLength(100);
    expect(first.body.next_batch).toBeDefined();
    // Older drafts' POST form reads the same queue.
    const second = await alice.json<{ events: { content: { n: number } }[]; next_batch?: string }>('POST', `${PREFIX}/DEHYDRATED1/events`, { next_batch: first.body.next_batch });
    expect(second.body.events).toHaveLength(50);
    const all = [...first.body.events, ...second.body.events].map((e) => e.content.n).sort((a, b) => a - b);
    expect(all).toEqual(Array.from({ length: 150 }, (_, i) => i));
    const done = await alice.json<Json>('GET', `${PREFIX}/DEHYDRATED1/events?from=${second.body.next_batch ?? ''}`);
    expect(done.body).toEqual({ events: [] });
  });

  it('refuses another user reading it, and bad keys without touching the current device', async () => {
    expect(await bob.json('GET', `${PREFIX}/DEHYDRATED1/events`)).toMatchObject({ status: 403, body: { errcode: 'M_FORBIDDEN' } });
    const wrong = deviceKeysFor(alice.userId, 'OTHER').keys;
    expect(await alice.json('PUT', PREFIX, { device_id: 'DEHYDRATED2', device_data: {}, device_keys: wrong })).toMatchObject({ status: 400, body: { errcode: 'M_INVALID_PARAM' } });
    expect(await alice.json('PUT', PREFIX, { device_id: 'ALICE1', device_data: {} })).toMatchObject({ status: 400, body: { errcode: 'M_INVALID_PARAM' } });
    expect((await alice.json<Json>('GET', PREFIX)).body.device_id).toBe('DEHYDRATED1');
    expect(await alice.json('PUT', PREFIX, { device_data: {} })).toMatchObject({ status: 400, body: { errcode: 'M_MISSING_PARAM' } });
  });

  it('replaces the old dehydrated device (its keys and queue go), and DELETE removes it', async () => {
    const { keys } = deviceKeysFor(alice.userId, 'DEHYDRATED2');
    expect((await alice.json('PUT', PREFIX, { device_id: 'DEHYDRATED2', device_data: { v: 2 }, device_keys: keys })).status).toBe(200);
    const q = await bob.json<{ device_keys: Record<string, Record<string, Json>> }>('POST', '/v3/keys/query', { device_keys: { [alice.userId]: [] } });
    expect(Object.keys(q.body.device_keys[alice.userId] ?? {})).toEqual(['DEHYDRATED2']);
    expect(await alice.json('GET', `${PREFIX}/DEHYDRATED1/events`)).toMatchObject({ status: 403 });
    expect(await alice.json('DELETE', PREFIX)).toEqual({ status: 200, body: { device_id: 'DEHYDRATED2' } });
    expect(await alice.json('GET', PREFIX)).toMatchObject({ status: 404 });
    const devices = await alice.json<{ devices: { device_id: string }[] }>('GET', '/v3/devices');
    expect(devices.body.devices.map((d) => d.device_id)).toEqual(['ALICE1']);
  });
});
