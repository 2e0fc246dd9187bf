import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { overHttp, TestClient, type SyncResponse } from './support/client.ts';
import { crossSigningKey, deviceKeysFor, oneTimeKeys } from './support/e2ee-keys.ts';
import { FakeServer } from './support/fake-server.ts';
import { serveOverHttp } from './support/http-server.ts';
import { freePort } from './support/server-process.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

type Json = Record<string, unknown>;
interface Lists extends SyncResponse {
  device_lists: { changed: string[]; left: string[] };
}
interface QueryAnswer {
  device_keys: Record<string, Record<string, Json>>;
  master_keys: Record<string, Json>;
  self_signing_keys: Record<string, Json>;
  failures: Record<string, Json>;
}

/**
 * Two servers of ours, a.test and b.test, federating over real HTTP, plus servers the test plays
 * (FakeServer): one that never answers in time, one that serves forged keys and sends EDUs.
 */
let a: TestApp;
let b: TestApp;
let aHttp: { baseUrl: string; close(): Promise<void> };
let bHttp: { baseUrl: string; close(): Promise<void> };
const slow = new FakeServer('slow.test', 7);
const evil = new FakeServer('evil.test', 9);

beforeAll(async () => {
  await Promise.all([slow.start(), evil.start()]);
  slow.answer = () => ({ status: 200, json: {}, delayMs: 20_000 });
  const [pa, pb] = await Promise.all([freePort(), freePort()]);
  const routes = { 'a.test': `http://127.0.0.1:${pa}`, 'b.test': `http://127.0.0.1:${pb}`, 'slow.test': slow.baseUrl, 'evil.test': evil.baseUrl };
  const fed = (name: string) => ({ server_name: name, rate_limits: { keys_claim: { per_second: 0 } }, federation: { allow_http: true, static_routes: routes, backoff_initial_ms: 50, backoff_max_ms: 200 } });
  [a, b] = await Promise.all([startTestApp(fed('a.test')), startTestApp(fed('b.test'))]);
  [aHttp, bHttp] = await Promise.all([serveOverHttp(a, pa), serveOverHttp(b, pb)]);
}, 60_000);

afterAll(async () => {
  await Promise.all([aHttp?.close(), bHttp?.close()]);
  await Promise.all([a?.close(), b?.close()]);
  await Promise.all([slow.stop(), evil.stop()]);
});

async function withKeys(client: TestClient, otks = 0) {
  const { keys, key } = deviceKeysFor(client.userId, client.deviceId);
  const res = await client.json('POST', '/v3/keys/upload', { device_keys: keys, ...(otks > 0 ? { one_time_keys: oneTimeKeys(client.userId, key, otks) } : {}) });
  expect(res.status).toBe(200);
  return { keys, key };
}

async function query(client: TestClient, deviceKeys: Record<string, string[]>, timeout?: number): Promise<QueryAnswer> {
  const res = await client.json<QueryAnswer>('POST', '/v3/keys/query', { device_keys: deviceKeys, ...(timeout === undefined ? {} : { timeout }) });
  expect(res.status).toBe(200);
  return res.body;
}

/** Syncs (long-polling) until `userId` is in device_lists.changed; returns the token after it. */
async function waitChanged(client: TestClient, since: string, userId: string, timeoutMs = 15_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let token = since;
  while (Date.now() < deadline) {
    const s = (await client.sync({ since: token, timeout: 2_000 })) as Lists;
    token = s.next_batch;
    if (s.device_lists.changed.includes(userId)) return token;
  }
  throw new Error(`${userId} never appeared in device_lists.changed`);
}

describe('keys across our servers', () => {
  it('queries and claims a user of the other server, and hears of their new and deleted devices', async () => {
    const alice = await TestClient.register(overHttp(aHttp.baseUrl), 'alice', { deviceId: 'A1' });
    const bob = await TestClient.register(overHttp(bHttp.baseUrl), 'bob', { deviceId: 'B1' });
    const { keys: bobKeys } = await withKeys(bob, 3);
    const master = crossSigningKey(bob.userId, 'master');
    const ssk = crossSigningKey(bob.userId, 'self_signing', undefined, master.key);
    expect((await bob.json('POST', '/v3/keys/device_signing/upload', { master_key: master.json, self_signing_key: ssk.json })).status).toBe(200);

    const first = await query(alice, { [bob.userId]: [] });
    expect(first.failures).toEqual({});
    expect(first.device_keys[bob.userId]?.B1).toMatchObject({ ...bobKeys });
    expect(first.master_keys[bob.userId]).toEqual(master.json);
    expect(first.self_signing_keys[bob.userId]).toEqual(ssk.json);

    const claimed = await alice.json<{ one_time_keys: Record<string, Record<string, Json>>; failures: Json }>('POST', '/v3/keys/claim', { one_time_keys: { [bob.userId]: { B1: 'signed_curve25519' } } });
    expect(claimed.body.failures).toEqual({});
    expect(Object.keys(claimed.body.one_time_keys[bob.userId]?.B1 ?? {})).toHaveLength(1);
    const bobSync = (await bob.sync()) as Lists & { device_one_time_keys_count: Record<string, number> };
    expect(bobSync.device_one_time_keys_count.signed_curve25519).toBe(2);

    // A new device of bob: b.test sends a.test an m.device_list_update, alice's sync says so,
    // and her next query (answered from a.test's cache, kept current by the EDUs) has it.
    const start = (await alice.sync()) as Lists;
    const bob2 = await TestClient.login(overHttp(bHttp.baseUrl), 'bob', { deviceId: 'B2' });
    await withKeys(bob2);
    const afterNew = await waitChanged(alice, start.next_batch, bob.userId);
    expect(Object.keys((await query(alice, { [bob.userId]: [] })).device_keys[bob.userId] ?? {}).sort()).toEqual(['B1', 'B2']);

    const ui = await bob2.json<Json>('DELETE', '/v3/devices/B2', {});
    expect((await bob2.json('DELETE', '/v3/devices/B2', { auth: { type: 'm.login.password', session: ui.body.session, user: 'bob', password: 'correct horse' } })).status).toBe(200);
    await waitChanged(alice, afterNew, bob.userId);
    expect(Object.keys((await query(alice, { [bob.userId]: [] })).device_keys[bob.userId] ?? {})).toEqual(['B1']);
  });

  it('answers within the timeout with the slow server in failures and the others served', async () => {
    const carol = await TestClient.register(overHttp(aHttp.baseUrl), 'carol');
    const dave = await TestClient.register(overHttp(bHttp.baseUrl), 'dave', { deviceId: 'D1' });
    await withKeys(dave, 1);
    const began = Date.now();
    const answer = await query(carol, { [dave.userId]: [], '@x:slow.test': [], '@y:nowhere.invalid': [] }, 1_000);
    expect(Date.now() - began).toBeLessThan(5_000);
    expect(Object.keys(answer.device_keys[dave.userId] ?? {})).toEqual(['D1']);
    expect(Object.keys(answer.failures).sort()).toEqual(['nowhere.invalid', 'slow.test']);
    const claim = await carol.json<{ one_time_keys: Record<string, Json>; failures: Json }>('POST', '/v3/keys/claim', {
      one_time_keys: { [dave.userId]: { D1: 'signed_curve25519' }, '@x:slow.test': { X: 'signed_curve25519' } },
      timeout: 1_000,
    });
    expect(Object.keys(claim.body.one_time_keys)).toEqual([dave.userId]);
    expect(Object.keys(claim.body.failures)).toEqual(['slow.test']);
  });
});

describe('keys from a server that lies', () => {
  it('serves only device keys and cross-signing keys whose signatures check out', async () => {
    const erin = await TestClient.register(overHttp(aHttp.baseUrl), 'erin');
    const good = deviceKeysFor('@mallory:evil.test', 'GOOD');
    const forged = { ...deviceKeysFor('@mallory:evil.test', 'FORGED').keys, algorithms: ['tampered'] };
    const otherUser = deviceKeysFor('@someone:a.test', 'STOLEN').keys;
    const master = crossSigningKey('@mallory:evil.test', 'master');
    const unsignedSsk = crossSigningKey('@mallory:evil.test', 'self_signing');
    evil.answer = (method, url) =>
      method === 'POST' && url === '/_matrix/federation/v1/user/keys/query'
        ? {
            status: 200,
            json: {
              device_keys: { '@mallory:evil.test': { GOOD: good.keys, FORGED: forged, STOLEN: otherUser, BAD: 'x' }, '@erin:a.test': { E: good.keys } },
              master_keys: { '@mallory:evil.test': master.json },
              self_signing_keys: { '@mallory:evil.test': unsignedSsk.json },
            },
          }
        : null;
    const answer = await query(erin, { '@mallory:evil.test': [] });
    expect(Object.keys(answer.device_keys['@mallory:evil.test'] ?? {})).toEqual(['GOOD']);
    expect(answer.device_keys['@erin:a.test']).toBeUndefined();
    expect(answer.master_keys['@mallory:evil.test']).toEqual(master.json);
    expect(answer.self_signing_keys['@mallory:evil.test']).toBeUndefined();
  });

  it('applies device-list EDUs only from the user\'s own server, and only validly signed keys', async () => {
    const frank = await TestClient.register(overHttp(aHttp.baseUrl), 'frank');
    const mallory = '@mallory:evil.test';
    const gd = deviceKeysFor(mallory, 'GOOD');
    evil.answer = (method, url) =>
      method === 'POST' && url === '/_matrix/federation/v1/user/keys/query' ? { status: 200, json: { device_keys: { [mallory]: { GOOD: gd.keys } } } } : null;
    await query(frank, { [mallory]: [] });
    const start = (await frank.sync()) as Lists;
    const send = async (edus: Json[]) => {
      const txn = { origin: 'evil.test', origin_server_ts: Date.now(), pdus: [], edus };
      const uri = `/_matrix/federation/v1/send/t${Date.now()}${Math.random()}`;
      const res = await fetch(`${aHttp.baseUrl}${uri}`, { method: 'PUT', headers: { authorization: evil.authorization('PUT', uri, 'a.test', txn), 'content-type': 'application/json' }, body: JSON.stringify(txn) });
      expect(res.status).toBe(200);
    };
    // About a.test's own user: refused (a server speaks only for its users).
    await send([{ edu_type: 'm.device_list_update', content: { user_id: '@frank:a.test', device_id: 'X', stream_id: 1, prev_id: [], keys: gd.keys } }]);
    // A new device with keys not signed by it: not applied; a valid one: applied and told.
    const bad = { ...deviceKeysFor(mallory, 'NEW').keys, algorithms: ['x'] };
    await send([{ edu_type: 'm.device_list_update', content: { user_id: mallory, device_id: 'NEW', stream_id: 5, prev_id: [], keys: bad } }]);
    const fresh = deviceKeysFor(mallory, 'NEW2');
    await send([{ edu_type: 'm.device_list_update', content: { user_id: mallory, device_id: 'NEW2', stream_id: 6, prev_id: [], keys: fresh.keys } }]);
    await waitChanged(frank, start.next_batch, mallory);
    // evil.test now "keeps us told": the cache answers, without asking it again.
    evil.answer = () => ({ status: 500, json: { errcode: 'M_UNKNOWN', error: 'down' } });
    const answer = await query(frank, { [mallory]: [] });
    expect(Object.keys(answer.device_keys[mallory] ?? {}).sort()).toEqual(['GOOD', 'NEW2']);
    expect(answer.failures).toEqual({});
    // A gap in the chain (prev_id we never saw): resynced through /user/devices.
    const resynced = deviceKeysFor(mallory, 'R1');
    let asked = false;
    evil.answer = (method, url) => {
      if (method !== 'GET' || url !== `/_matrix/federation/v1/user/devices/${encodeURIComponent(mallory)}`) return null;
      asked = true;
      return { status: 200, json: { user_id: mallory, stream_id: 9, devices: [{ device_id: 'R1', keys: resynced.keys }] } };
    };
    await send([{ edu_type: 'm.device_list_update', content: { user_id: mallory, device_id: 'R1', stream_id: 9, prev_id: [8], keys: resynced.keys } }]);
    const deadline = Date.now() + 10_000;
    let devices: string[] = [];
    while (Date.now() < deadline) {
      devices = Object.keys((await query(frank, { [mallory]: [] })).device_keys[mallory] ?? {});
      if (devices.length === 1 && devices[0] === 'R1') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(asked).toBe(true);
    expect(devices).toEqual(['R1']);
  });

  it('asks a server that sends no device-list updates again when polled, and tells its trackers of a change', async () => {
    const gina = await TestClient.register(overHttp(aHttp.baseUrl), 'gina');
    const sam = '@sam:evil.test';
    const one = deviceKeysFor(sam, 'S1');
    const two = deviceKeysFor(sam, 'S2');
    let devices: Record<string, Json> = { S1: one.keys };
    let asked = 0;
    evil.answer = (method, url) => {
      if (method !== 'POST' || url !== '/_matrix/federation/v1/user/keys/query') return null;
      asked++;
      return { status: 200, json: { device_keys: { [sam]: devices } } };
    };
    expect(Object.keys((await query(gina, { [sam]: [] })).device_keys[sam] ?? {})).toEqual(['S1']);
    // Never told by evil.test, so each query asks it again (the cache is not trusted).
    await query(gina, { [sam]: [] });
    expect(asked).toBe(2);
    const start = (await gina.sync()) as Lists;
    devices = { S1: one.keys, S2: two.keys };
    expect(await a.federation?.deviceKeys.pollUnsubscribed(0, 100)).toBeGreaterThanOrEqual(1);
    await waitChanged(gina, start.next_batch, sam);
  });
});
