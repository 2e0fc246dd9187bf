import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClient, type SyncResponse } from './support/client.ts';
import { crossSigningKey, deviceKeysFor, newEd25519, oneTimeKeys, signAs } from './support/e2ee-keys.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

type Json = Record<string, unknown>;

let t: TestApp;
let alice: TestClient;
let bob: TestClient;

beforeAll(async () => {
  t = await startTestApp({ rate_limits: { keys_claim: { per_second: 1, burst_count: 30 } } });
  alice = await TestClient.register(t.app, 'alice', { deviceId: 'ALICE1' });
  bob = await TestClient.register(t.app, 'bob', { deviceId: 'BOB1' });
});
afterAll(() => t.close());

async function upload(client: TestClient, body: Json) {
  return client.json<Json>('POST', '/v3/keys/upload', body);
}

async function query(client: TestClient, deviceKeys: Record<string, string[]>) {
  const res = await client.json<{ device_keys: Record<string, Record<string, Json>>; master_keys: Record<string, Json>; self_signing_keys: Record<string, Json>; user_signing_keys: Record<string, Json>; failures: Json }>(
    'POST',
    '/v3/keys/query',
    { device_keys: deviceKeys },
  );
  expect(res.status).toBe(200);
  return res.body;
}

async function claim(client: TestClient, userId: string, deviceId: string, algorithm = 'signed_curve25519') {
  return client.json<{ one_time_keys: Record<string, Record<string, Record<string, Json>>>; failures: Json }>('POST', '/v3/keys/claim', {
    one_time_keys: { [userId]: { [deviceId]: algorithm } },
  });
}

interface E2eeSync extends SyncResponse {
  device_lists: { changed: string[]; left: string[] };
  device_one_time_keys_count: Record<string, number>;
  device_unused_fallback_key_types: string[];
}

describe('/keys/upload', () => {
  it('stores device keys signed by the device, served by /keys/query with the display name', async () => {
    const { keys } = deviceKeysFor(alice.userId, 'ALICE1');
    const res = await upload(alice, { device_keys: keys });
    expect(res).toEqual({ status: 200, body: { one_time_key_counts: { signed_curve25519: 0 } } });
    const answer = await query(bob, { [alice.userId]: [] });
    expect(answer.device_keys[alice.userId]?.ALICE1).toMatchObject({ ...keys, unsigned: {} });
    expect(answer.failures).toEqual({});
  });

  it('refuses device keys for another user or device, or not signed by the device, and stores nothing', async () => {
    const carol = await TestClient.register(t.app, 'carol', { deviceId: 'CAROL1' });
    const other = deviceKeysFor(alice.userId, 'CAROL1').keys;
    expect((await upload(carol, { device_keys: other })).body).toMatchObject({ errcode: 'M_INVALID_PARAM' });
    const wrongDevice = deviceKeysFor(carol.userId, 'CAROL2').keys;
    expect((await upload(carol, { device_keys: wrongDevice })).body).toMatchObject({ errcode: 'M_INVALID_PARAM' });
    const { keys } = deviceKeysFor(carol.userId, 'CAROL1');
    const forged = { ...keys, algorithms: ['m.olm.v1.curve25519-aes-sha2'] };
    const res = await upload(carol, { device_keys: forged, one_time_keys: oneTimeKeys(carol.userId, newEd25519(), 3) });
    expect(res).toMatchObject({ status: 400, body: { errcode: 'M_INVALID_SIGNATURE' } });
    expect((await query(bob, { [carol.userId]: [] })).device_keys[carol.userId]).toEqual({});
    expect((await upload(carol, {})).body).toEqual({ one_time_key_counts: { signed_curve25519: 0 } });
  });

  it('refuses a one-time key id reused for another key, storing nothing of that upload', async () => {
    const dave = await TestClient.register(t.app, 'dave', { deviceId: 'DAVE1' });
    const { key } = deviceKeysFor(dave.userId, 'DAVE1');
    const first = oneTimeKeys(dave.userId, key, 2);
    expect((await upload(dave, { one_time_keys: first })).body).toEqual({ one_time_key_counts: { signed_curve25519: 2 } });
    // The same keys again are fine (a retried upload).
    expect((await upload(dave, { one_time_keys: first })).body).toEqual({ one_time_key_counts: { signed_curve25519: 2 } });
    const clash = { ...oneTimeKeys(dave.userId, key, 1, 0), ...oneTimeKeys(dave.userId, key, 3, 10) };
    const res = await upload(dave, { one_time_keys: clash });
    expect(res).toMatchObject({ status: 400, body: { errcode: 'M_INVALID_PARAM' } });
    expect(String(res.body.error)).toContain('signed_curve25519:AAAA0000');
    expect((await upload(dave, {})).body).toEqual({ one_time_key_counts: { signed_curve25519: 2 } });
  });

  it('answers malformed keys with Matrix errors', async () => {
    expect((await upload(alice, { one_time_keys: { nocolon: 'x' } })).body).toMatchObject({ errcode: 'M_INVALID_PARAM' });
    expect((await upload(alice, { one_time_keys: { 'curve25519:A': 5 } })).body).toMatchObject({ errcode: 'M_BAD_JSON' });
    expect((await upload(alice, { one_time_keys: [] })).body).toMatchObject({ errcode: 'M_BAD_JSON' });
    expect((await upload(alice, { device_keys: 'x' })).body).toMatchObject({ errcode: 'M_BAD_JSON' });
    const many = Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`curve25519:K${i}`, 'a']));
    expect(await upload(alice, { one_time_keys: many })).toMatchObject({ status: 413, body: { errcode: 'M_TOO_LARGE' } });
  });
});

describe('/keys/claim', () => {
  it('hands out each one-time key once, then the fallback key; /sync counts each step', async () => {
    const erin = await TestClient.register(t.app, 'erin', { deviceId: 'ERIN1' });
    const { keys, key } = deviceKeysFor(erin.userId, 'ERIN1');
    const fallback = { 'signed_curve25519:FB1': signAs({ key: 'ZmFsbGJhY2s', fallback: true }, erin.userId, key) };
    await upload(erin, { device_keys: keys, one_time_keys: oneTimeKeys(erin.userId, key, 3), fallback_keys: fallback });
    let sync = (await erin.sync()) as E2eeSync;
    expect(sync.device_one_time_keys_count).toEqual({ signed_curve25519: 3 });
    expect(sync.device_unused_fallback_key_types).toEqual(['signed_curve25519']);
    const seen = new Set<string>();
    for (let left = 2; left >= 0; left--) {
      const res = await claim(bob, erin.userId, 'ERIN1');
      const got = Object.entries(res.body.one_time_keys[erin.userId]?.ERIN1 ?? {});
      expect(got).toHaveLength(1);
      const [id, value] = got[0] ?? ['', {}];
      expect(seen.has(id)).toBe(false);
      seen.add(id);
      expect(value.fallback).toBeUndefined();
      sync = (await erin.sync({ since: sync.next_batch })) as E2eeSync;
      expect(sync.device_one_time_keys_count).toEqual({ signed_curve25519: left });
      expect(sync.device_unused_fallback_key_types).toEqual(['signed_curve25519']);
    }
    for (let i = 0; i < 2; i++) {
      const res = await claim(bob, erin.userId, 'ERIN1');
      expect(res.body.one_time_keys[erin.userId]?.ERIN1).toEqual(fallback);
    }
    sync = (await erin.sync({ since: sync.next_batch })) as E2eeSync;
    expect(sync.device_unused_fallback_key_types).toEqual([]);
    // The same fallback key uploaded again stays used; a new one is unused.
    await upload(erin, { fallback_keys: fallback });
    sync = (await erin.sync({ since: sync.next_batch })) as E2eeSync;
    expect(sync.device_unused_fallback_key_types).toEqual([]);
    await upload(erin, { fallback_keys: { 'signed_curve25519:FB2': signAs({ key: 'bmV3', fallback: true }, erin.userId, key) } });
    sync = (await erin.sync({ since: sync.next_batch })) as E2eeSync;
    expect(sync.device_unused_fallback_key_types).toEqual(['signed_curve25519']);
  });

  it('never gives one key to two of many concurrent claimers', async () => {
    const fay = await TestClient.register(t.app, 'fay', { deviceId: 'FAY1' });
    const { key } = deviceKeysFor(fay.userId, 'FAY1');
    await upload(fay, { one_time_keys: oneTimeKeys(fay.userId, key, 20) });
    const claimers = await Promise.all(Array.from({ length: 4 }, (_, i) => TestClient.register(t.app, `claimer${i}`)));
    const results = await Promise.all(Array.from({ length: 24 }, (_, i) => claim(claimers[i % 4] as TestClient, fay.userId, 'FAY1')));
    const ids = results.flatMap((r) => Object.keys(r.body.one_time_keys[fay.userId]?.FAY1 ?? {}));
    expect(ids).toHaveLength(20);
    expect(new Set(ids).size).toBe(20);
  });

  it('gives concurrent claimers of one device different one-time keys, then each the fallback key', async () => {
    const gus = await TestClient.register(t.app, 'gus', { deviceId: 'GUS1' });
    const { key } = deviceKeysFor(gus.userId, 'GUS1');
    const fallback = { 'signed_curve25519:FB1': signAs({ key: 'ZmFsbGJhY2s', fallback: true }, gus.userId, key) };
    await upload(gus, { one_time_keys: oneTimeKeys(gus.userId, key, 10), fallback_keys: fallback });
    const claimers = await Promise.all(Array.from({ length: 3 }, (_, i) => TestClient.register(t.app, `gusclaimer${i}`)));
    // Sent at once, so claims of the same device share statements (GroupCommit).
    const results = await Promise.all(Array.from({ length: 14 }, (_, i) => claim(claimers[i % 3] as TestClient, gus.userId, 'GUS1')));
    expect(results.every((r) => r.status === 200)).toBe(true);
    const answers = results.map((r) => r.body.one_time_keys[gus.userId]?.GUS1 ?? {});
    const oneTime = answers.flatMap((a) => Object.keys(a)).filter((id) => id !== 'signed_curve25519:FB1');
    expect(oneTime).toHaveLength(10);
    expect(new Set(oneTime).size).toBe(10);
    expect(answers.filter((a) => 'signed_curve25519:FB1' in a)).toEqual(Array.from({ length: 4 }, () => fallback));
  });

  it('still hands out keys uploaded with lower ids than those already claimed', async () => {
    const hal = await TestClient.register(t.app, 'hal', { deviceId: 'HAL1' });
    const { key } = deviceKeysFor(hal.userId, 'HAL1');
    await upload(hal, { one_time_keys: oneTimeKeys(hal.userId, key, 3, 50) });
    const first = await claim(bob, hal.userId, 'HAL1');
    expect(Object.keys(first.body.one_time_keys[hal.userId]?.HAL1 ?? {})).toEqual(['signed_curve25519:AAAA0050']);
    // Claims now look past AAAA0050 first; these sort before it.
    await upload(hal, { one_time_keys: oneTimeKeys(hal.userId, key, 2, 10) });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(...Object.keys((await claim(bob, hal.userId, 'HAL1')).body.one_time_keys[hal.userId]?.HAL1 ?? {}));
    expect(ids.sort()).toEqual(['signed_curve25519:AAAA0010', 'signed_curve25519:AAAA0011', 'signed_curve25519:AAAA0051', 'signed_curve25519:AAAA0052']);
  });

  it('rate-limits claims per user', async () => {
    const greedy = await TestClient.register(t.app, 'greedy');
    const statuses: number[] = [];
    for (let i = 0; i < 32; i++) statuses.push((await claim(greedy, alice.userId, 'ALICE1')).status);
    expect(statuses.slice(0, 30).every((s) => s === 200)).toBe(true);
    const limited = await claim(greedy, alice.userId, 'ALICE1');
    expect(limited).toMatchObject({ status: 429, body: { errcode: 'M_LIMIT_EXCEEDED' } });
    expect(limited.body).toHaveProperty('retry_after_ms');
  });
});

describe('device lists', () => {
  it('tells a user about its own devices and those of users it queried, in /sync and /keys/changes', async () => {
    const hank = await TestClient.register(t.app, 'hank', { deviceId: 'HANK1' });
    const ivy = await TestClient.register(t.app, 'ivy', { deviceId: 'IVY1' });
    const start = (await hank.sync()) as E2eeSync;
    await query(hank, { [ivy.userId]: [] });
    // A new device of ivy with keys: hank's parked long-poll wakes with it.
    const poll = hank.sync({ since: start.next_batch, timeout: 10_000 }) as Promise<E2eeSync>;
    const ivy2 = await TestClient.login(t.app, 'ivy', { deviceId: 'IVY2' });
    await upload(ivy2, { device_keys: deviceKeysFor(ivy.userId, 'IVY2').keys });
    const woken = await poll;
    expect(woken.device_lists.changed).toEqual([ivy.userId]);
    const changes = await hank.json('GET', `/v3/keys/changes?from=${start.next_batch}&to=${woken.next_batch}`);
    expect(changes.body).toEqual({ changed: [ivy.userId], left: [] });
    // Nothing new: the next sync reports nothing.
    const quiet = (await hank.sync({ since: woken.next_batch })) as E2eeSync;
    expect(quiet.device_lists.changed).toEqual([]);
    // Someone who never queried ivy hears nothing; ivy hears about itself.
    const stranger = await TestClient.register(t.app, 'stranger');
    const strangerStart = (await stranger.sync()) as E2eeSync;
    const ivyStart = (await ivy.sync()) as E2eeSync;
    const ivy3 = await TestClient.login(t.app, 'ivy', { deviceId: 'IVY3' });
    await upload(ivy3, { device_keys: deviceKeysFor(ivy.userId, 'IVY3').keys });
    expect(((await stranger.sync({ since: strangerStart.next_batch })) as E2eeSync).device_lists.changed).toEqual([]);
    expect(((await ivy.sync({ since: ivyStart.next_batch })) as E2eeSync).device_lists.changed).toEqual([ivy.userId]);
    // Deleting a device: gone from /keys/query, and the tracker is told.
    const before = (await hank.sync({ since: quiet.next_batch })) as E2eeSync;
    const first = await ivy.json<Json>('DELETE', '/v3/devices/IVY2', {});
    expect(first.status).toBe(401);
    const deleted = await ivy.json('DELETE', '/v3/devices/IVY2', { auth: { type: 'm.login.password', session: first.body.session, identifier: { type: 'm.id.user', user: 'ivy' }, password: 'correct horse' } });
    expect(deleted.status).toBe(200);
    expect(Object.keys((await query(hank, { [ivy.userId]: [] })).device_keys[ivy.userId] ?? {})).toEqual(['IVY3']);
    expect(((await hank.sync({ since: before.next_batch })) as E2eeSync).device_lists.changed).toEqual([ivy.userId]);
  });
});

describe('cross-signing', () => {
  it('takes the first upload without auth, a replacement only with it, and merges signatures into /keys/query', async () => {
    const jo = await TestClient.register(t.app, 'jo', { deviceId: 'JO1' });
    const { keys: deviceKeys, key: deviceKey } = deviceKeysFor(jo.userId, 'JO1');
    await upload(jo, { device_keys: deviceKeys });
    const master = crossSigningKey(jo.userId, 'master');
    const selfSigning = crossSigningKey(jo.userId, 'self_signing', undefined, master.key);
    const userSigning = crossSigningKey(jo.userId, 'user_signing', undefined, master.key);
    // A self-signing key not signed by the master key is refused.
    const unsigned = crossSigningKey(jo.userId, 'self_signing');
    expect((await jo.json('POST', '/v3/keys/device_signing/upload', { master_key: master.json, self_signing_key: unsigned.json })).body).toMatchObject({ errcode: 'M_INVALID_SIGNATURE' });
    const first = await jo.json('POST', '/v3/keys/device_signing/upload', { master_key: master.json, self_signing_key: selfSigning.json, user_signing_key: userSigning.json });
    expect(first).toEqual({ status: 200, body: {} });
    // The same keys again need no auth; new ones do.
    expect((await jo.json('POST', '/v3/keys/device_signing/upload', { master_key: master.json })).status).toBe(200);
    const replacement = crossSigningKey(jo.userId, 'master');
    const challenge = await jo.json<Json>('POST', '/v3/keys/device_signing/upload', { master_key: replacement.json });
    expect(challenge).toMatchObject({ status: 401, body: { flows: [{ stages: ['m.login.password'] }] } });

    // The self-signing key signs the device; the device signs the master key.
    const signedDevice = signAs(deviceKeys, jo.userId, selfSigning.key);
    const signedMaster = signAs(master.json, jo.userId, deviceKey);
    const badDevice = signAs({ ...deviceKeys, algorithms: ['x'] }, jo.userId, selfSigning.key);
    const res = await jo.json<Json>('POST', '/v3/keys/signatures/upload', { [jo.userId]: { JO1: signedDevice, [master.key.publicB64]: signedMaster } });
    expect(res).toEqual({ status: 200, body: { failures: {} } });
    const refused = await jo.json<{ failures: Record<string, Record<string, Json>> }>('POST', '/v3/keys/signatures/upload', { [jo.userId]: { JO1: badDevice, NOPE: signedDevice } });
    expect(refused.body.failures[jo.userId]?.JO1).toMatchObject({ errcode: 'M_INVALID_SIGNATURE' });
    expect(refused.body.failures[jo.userId]?.NOPE).toMatchObject({ errcode: 'M_NOT_FOUND' });

    // Bob sees jo's keys with the signatures, but not jo's user-signing key.
    const seen = await query(bob, { [jo.userId]: [] });
    const sigs = (seen.device_keys[jo.userId]?.JO1?.signatures ?? {}) as Record<string, Record<string, string>>;
    expect(Object.keys(sigs[jo.userId] ?? {}).sort()).toEqual([`ed25519:JO1`, selfSigning.key.keyId].sort());
    expect(Object.keys(((seen.master_keys[jo.userId]?.signatures ?? {}) as Record<string, Json>)[jo.userId] ?? {})).toEqual(['ed25519:JO1']);
    expect(seen.self_signing_keys[jo.userId]).toEqual(selfSigning.json);
    expect(seen.user_signing_keys).toEqual({});
    expect((await query(jo, { [jo.userId]: [] })).user_signing_keys[jo.userId]).toEqual(userSigning.json);

    // Bob cross-signs jo's master key with his user-signing key: only bob sees that signature.
    const bobMaster = crossSigningKey(bob.userId, 'master');
    const bobUsk = crossSigningKey(bob.userId, 'user_signing', undefined, bobMaster.key);
    expect((await bob.json('POST', '/v3/keys/device_signing/upload', { master_key: bobMaster.json, user_signing_key: bobUsk.json })).status).toBe(200);
    const bobSigned = signAs(master.json, bob.userId, bobUsk.key);
    expect((await bob.json('POST', '/v3/keys/signatures/upload', { [jo.userId]: { [master.key.publicB64]: bobSigned } })).body).toEqual({ failures: {} });
    const masterSigs = (who: TestClient) => query(who, { [jo.userId]: [] }).then((q) => Object.keys((q.master_keys[jo.userId]?.signatures ?? {}) as Json).sort());
    expect(await masterSigs(bob)).toEqual([bob.userId, jo.userId].sort());
    expect(await masterSigs(alice)).toEqual([jo.userId]);
  });
});

describe('sliding sync e2ee extension', () => {
  it('carries the key counts, unused fallback types and device-list changes, with the position in pos', async () => {
    const kim = await TestClient.register(t.app, 'kim', { deviceId: 'KIM1' });
    const lee = await TestClient.register(t.app, 'lee', { deviceId: 'LEE1' });
    const { key } = deviceKeysFor(kim.userId, 'KIM1');
    await upload(kim, { one_time_keys: oneTimeKeys(kim.userId, key, 4), fallback_keys: { 'signed_curve25519:F': signAs({ key: 'Zg', fallback: true }, kim.userId, key) } });
    await query(kim, { [lee.userId]: [] });
    const path = (pos?: string) => `/unstable/org.matrix.simplified_msc3575/sync${pos === undefined ? '' : `?pos=${pos}&timeout=0`}`;
    type Sliding = { pos: string; extensions: { e2ee?: { device_lists: { changed: string[]; left: string[] }; device_one_time_keys_count: Record<string, number>; device_unused_fallback_key_types: string[] } } };
    const first = await kim.json<Sliding>('POST', path(), { extensions: { e2ee: { enabled: true } } });
    expect(first.status).toBe(200);
    expect(first.body.extensions.e2ee).toEqual({ device_lists: { changed: [], left: [] }, device_one_time_keys_count: { signed_curve25519: 4 }, device_unused_fallback_key_types: ['signed_curve25519'] });
    await upload(lee, { device_keys: deviceKeysFor(lee.userId, 'LEE1').keys });
    const next = await kim.json<Sliding>('POST', path(first.body.pos), { extensions: { e2ee: { enabled: true } } });
    expect(next.body.extensions.e2ee?.device_lists.changed).toEqual([lee.userId]);
    const quiet = await kim.json<Sliding>('POST', path(next.body.pos), { extensions: { e2ee: { enabled: true } } });
    expect(quiet.body.extensions.e2ee?.device_lists.changed).toEqual([]);
    // Without the extension, none of it.
    expect((await kim.json<Sliding>('POST', path(quiet.body.pos), {})).body.extensions).toEqual({});
  });
});
