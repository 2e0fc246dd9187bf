import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppserviceRegistry } from '../src/appservice/registration.ts';
import { devices, users } from '../src/storage/schema.ts';
import { TestClient } from './support/client.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

let t: TestApp;

beforeAll(async () => {
  t = await startTestApp();
});
afterAll(() => t.close());

type Json = Record<string, unknown>;

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: Json }> {
  const res = await t.app.request(`/_matrix/client${path}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as Json };
}

const post = (path: string, body: unknown, headers: Record<string, string> = {}) => call('POST', path, body, headers);
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const dummy = { type: 'm.login.dummy' };
const deviceIdsOf = (body: Json) => (body.devices as { device_id: string }[]).map((d) => d.device_id).sort();

describe('GET /versions', () => {
  it('lists the supported spec versions and MSC4246', async () => {
    const res = await call('GET', '/versions');
    expect(res.status).toBe(200);
    expect(res.body.versions).toEqual(expect.arrayContaining(['v1.1', 'v1.11']));
    expect(res.body.unstable_features).toMatchObject({ 'org.matrix.msc4246': true });
  });
});

describe('registration', () => {
  it('answers a request without auth with a 401 m.login.dummy challenge and creates nobody', async () => {
    const challenge = await post('/v3/register', { username: 'reg1', password: 'pw' });
    expect(challenge.status).toBe(401);
    expect(challenge.body).toMatchObject({ flows: [{ stages: ['m.login.dummy'] }], params: {}, session: expect.any(String) });
    expect(challenge.body.access_token).toBeUndefined();
    // The name is still free: nothing was registered by the challenge.
    expect(await call('GET', '/v3/register/available?username=reg1')).toEqual({ status: 200, body: { available: true } });
  });

  it('registers with auth m.login.dummy and logs the new user in', async () => {
    const done = await post('/v3/register', { username: 'reg1', password: 'pw', auth: { ...dummy, session: 'whatever' } });
    expect(done).toEqual({
      status: 200,
      body: { user_id: `@reg1:${SERVER_NAME}`, access_token: expect.any(String), device_id: expect.any(String), home_server: SERVER_NAME },
    });
    const whoami = await call('GET', '/v3/account/whoami', undefined, bearer(String(done.body.access_token)));
    expect(whoami).toEqual({ status: 200, body: { user_id: `@reg1:${SERVER_NAME}`, device_id: done.body.device_id, is_guest: false } });
  });

  it('refuses a taken username with M_USER_IN_USE, with or without auth', async () => {
    await TestClient.register(t.app, 'taken');
    expect(await post('/v3/register', { username: 'taken', password: 'pw', auth: dummy })).toMatchObject({ status: 400, body: { errcode: 'M_USER_IN_USE' } });
    // Reported before the auth stage, so clients learn it without completing UIA.
    expect(await post('/v3/register', { username: 'taken', password: 'pw' })).toMatchObject({ status: 400, body: { errcode: 'M_USER_IN_USE' } });
  });

  it.each([['Upper'], [''], ['@:' + SERVER_NAME], ['@'], [':'], ['sp ace'], ['a:b'], ['ünï']])('refuses the username %j with M_INVALID_USERNAME', async (username) => {
    const res = await post('/v3/register', { username, password: 'pw', auth: dummy });
    expect(res).toMatchObject({ status: 400, body: { errcode: 'M_INVALID_USERNAME' } });
  });

  it('never lets anyone register the server user @:server_name', async () => {
    const res = await post('/v3/register', { username: '', password: 'pw', auth: dummy });
    expect(res.body.errcode).toBe('M_INVALID_USERNAME');
    const login = await post('/v3/login', { type: 'm.login.password', identifier: { type: 'm.id.user', user: `@:${SERVER_NAME}` }, password: 'pw' });
    expect(login).toMatchObject({ status: 403, body: { errcode: 'M_FORBIDDEN' } });
  });

  it('refuses a user ID longer than 255 bytes', async () => {
    const longest = 'a'.repeat(255 - `@:${SERVER_NAME}`.length);
    expect(await post('/v3/register', { username: `${longest}b`, password: 'pw', auth: dummy })).toMatchObject({ status: 400, body: { errcode: 'M_INVALID_USERNAME' } });
    expect((await post('/v3/register', { username: longest, password: 'pw', auth: dummy, inhibit_login: true })).status).toBe(200);
  });

  it('with inhibit_login returns only the user_id, and the user can log in afterwards', async () => {
    const inhibited = await post('/v3/register', { username: 'quietreg', password: 'pw', inhibit_login: true, auth: dummy });
    expect(inhibited).toEqual({ status: 200, body: { user_id: `@quietreg:${SERVER_NAME}` } });
    const login = await TestClient.login(t.app, 'quietreg', { password: 'pw' });
    // No device was created by the registration itself.
    expect(deviceIdsOf((await login.json('GET', '/v3/devices')).body)).toEqual([login.deviceId]);
  });

  it('uses a device_id the client chose, with its initial display name', async () => {
    const chosen = await post('/v3/register', { username: 'devreg', password: 'pw', device_id: 'MYDEVICE', initial_device_display_name: 'Phone', auth: dummy });
    expect(chosen.status).toBe(200);
    expect(chosen.body.device_id).toBe('MYDEVICE');
    const device = await call('GET', '/v3/devices/MYDEVICE', undefined, bearer(String(chosen.body.access_token)));
    expect(device).toEqual({ status: 200, body: { device_id: 'MYDEVICE', display_name: 'Phone' } });
  });

  it('refuses guests with 403 M_GUEST_ACCESS_FORBIDDEN', async () => {
    const guest = await call('POST', '/v3/register?kind=guest', {});
    expect(guest).toMatchObject({ status: 403, body: { errcode: 'M_GUEST_ACCESS_FORBIDDEN' } });
  });

  it('reports username availability', async () => {
    await TestClient.register(t.app, 'availtaken');
    expect(await call('GET', '/v3/register/available?username=freeone')).toEqual({ status: 200, body: { available: true } });
    expect(await call('GET', '/v3/register/available?username=availtaken')).toMatchObject({ status: 400, body: { errcode: 'M_USER_IN_USE' } });
    expect(await call('GET', '/v3/register/available?username=Bad%20Name')).toMatchObject({ status: 400, body: { errcode: 'M_INVALID_USERNAME' } });
    expect(await call('GET', '/v3/register/available')).toMatchObject({ status: 400, body: { errcode: 'M_MISSING_PARAM' } });
  });

  it('refuses names in an appservice\'s exclusive namespace with M_EXCLUSIVE, in /register and /register/available', async () => {
    const appservices = AppserviceRegistry.fromFiles(
      [
        {
          source: 'bridge.yaml',
          content: {
            id: 'bridge',
            url: null,
            as_token: 'as-bridge',
            hs_token: 'hs-bridge',
            sender_localpart: 'bridgebot',
            namespaces: { users: [{ exclusive: true, regex: `@bridged_.*:${SERVER_NAME}` }], rooms: [], aliases: [] },
          },
        },
      ],
      SERVER_NAME,
    );
    const withBridge = await startTestApp({}, undefined, { appservices });
    try {
      const available = await withBridge.app.request('/_matrix/client/v3/register/available?username=bridged_alice');
      expect(available.status).toBe(400);
      expect(await available.json()).toMatchObject({ errcode: 'M_EXCLUSIVE' });
      const register = await withBridge.app.request('/_matrix/client/v3/register', {
        method: 'POST',
        body: JSON.stringify({ username: 'bridged_alice', password: 'pw', auth: dummy }),
      });
      expect(register.status).toBe(400);
      expect(await register.json()).toMatchObject({ errcode: 'M_EXCLUSIVE' });
      // Names outside the namespace are unaffected.
      expect((await withBridge.app.request('/_matrix/client/v3/register/available?username=alice')).status).toBe(200);
    } finally {
      await withBridge.close();
    }
  });

  it('is refused with 403 M_FORBIDDEN when registration is disabled', async () => {
    const closed = await startTestApp({ registration: { enabled: false } });
    try {
      const res = await closed.app.request('/_matrix/client/v3/register', {
        method: 'POST',
        body: JSON.stringify({ username: 'x', password: 'y', auth: dummy }),
      });
      expect(res.status).toBe(403);
      expect(await res.json()).toMatchObject({ errcode: 'M_FORBIDDEN' });
      // Nor can anyone probe which names exist.
      const available = await closed.app.request('/_matrix/client/v3/register/available?username=x');
      expect(available.status).toBe(403);
      expect(await available.json()).toMatchObject({ errcode: 'M_FORBIDDEN' });
      // And the refused registration created no account.
      expect(await closed.database.db.select().from(users)).toEqual([]);
    } finally {
      await closed.close();
    }
  });
});

describe('login', () => {
  beforeAll(async () => {
    await TestClient.register(t.app, 'logan');
  });

  it('offers m.login.password', async () => {
    expect(await call('GET', '/v3/login')).toEqual({ status: 200, body: { flows: [{ type: 'm.login.password' }] } });
  });

  it.each([
    ['identifier m.id.user with a localpart', { identifier: { type: 'm.id.user', user: 'logan' } }],
    ['identifier m.id.user with a full user ID', { identifier: { type: 'm.id.user', user: `@logan:${SERVER_NAME}` } }],
    ['the deprecated top-level user', { user: 'logan' }],
  ])('accepts %s', async (_name, who) => {
    const res = await post('/v3/login', { type: 'm.login.password', password: 'correct horse', ...who });
    expect(res).toEqual({
      status: 200,
      body: { user_id: `@logan:${SERVER_NAME}`, access_token: expect.any(String), device_id: expect.any(String), home_server: SERVER_NAME },
    });
    expect((await call('GET', '/v3/account/whoami', undefined, bearer(String(res.body.access_token)))).body.user_id).toBe(`@logan:${SERVER_NAME}`);
  });

  it('refuses a wrong password, an unknown user and a user of another server with 403 M_FORBIDDEN', async () => {
    for (const [user, password] of [
      ['logan', 'nope'],
      ['nobody', 'correct horse'],
      ['@logan:elsewhere.example', 'correct horse'],
    ]) {
      const res = await post('/v3/login', { type: 'm.login.password', identifier: { type: 'm.id.user', user }, password });
      expect(res).toMatchObject({ status: 403, body: { errcode: 'M_FORBIDDEN' } });
      expect(res.body.access_token).toBeUndefined();
    }
  });

  it('refuses unknown login types with 400 M_UNKNOWN', async () => {
    expect(await post('/v3/login', { type: 'm.login.sso' })).toMatchObject({ status: 400, body: { errcode: 'M_UNKNOWN' } });
    expect(await post('/v3/login', { type: 'm.login.token', token: 'x' })).toMatchObject({ status: 400, body: { errcode: 'M_UNKNOWN' } });
  });

  it('replaces the token of a reused device_id: the old token dies, the new one works, the device stays one', async () => {
    const first = await TestClient.login(t.app, 'logan', { deviceId: 'REUSED' });
    const second = await TestClient.login(t.app, 'logan', { deviceId: 'REUSED' });
    expect(second.token).not.toBe(first.token);
    expect(second.deviceId).toBe('REUSED');
    expect(await first.json('GET', '/v3/account/whoami')).toMatchObject({ status: 401, body: { errcode: 'M_UNKNOWN_TOKEN' } });
    expect(await second.json('GET', '/v3/account/whoami')).toEqual({ status: 200, body: { user_id: `@logan:${SERVER_NAME}`, device_id: 'REUSED', is_guest: false } });
    const ids = deviceIdsOf((await second.json('GET', '/v3/devices')).body);
    expect(ids.filter((id) => id === 'REUSED')).toHaveLength(1);
  });

  it('keeps the queue of a device that logs in again', async () => {
    const first = await TestClient.register(t.app, 'resumer', { deviceId: 'KEEP' });
    expect((await first.sendToDevice('m.kept', { [first.userId]: { KEEP: { kept: true } } })).status).toBe(200);
    const second = await TestClient.login(t.app, 'resumer', { deviceId: 'KEEP' });
    expect((await second.sync()).to_device.events).toEqual([{ sender: first.userId, type: 'm.kept', content: { kept: true } }]);
  });
});

describe('access tokens', () => {
  let u: TestClient;
  beforeAll(async () => {
    u = await TestClient.register(t.app, 'tokenuser', { deviceId: 'TOKDEV' });
  });

  it('whoami names the user and device', async () => {
    expect(await u.json('GET', '/v3/account/whoami')).toEqual({ status: 200, body: { user_id: u.userId, device_id: 'TOKDEV', is_guest: false } });
  });

  it('accepts the deprecated ?access_token= query parameter', async () => {
    const res = await call('GET', `/v3/account/whoami?access_token=${encodeURIComponent(u.token)}`);
    expect(res).toEqual({ status: 200, body: { user_id: u.userId, device_id: 'TOKDEV', is_guest: false } });
  });

  it('answers 401 M_MISSING_TOKEN without a token and 401 M_UNKNOWN_TOKEN for a bad one', async () => {
    expect(await call('GET', '/v3/account/whoami')).toMatchObject({ status: 401, body: { errcode: 'M_MISSING_TOKEN' } });
    expect(await call('GET', '/v3/account/whoami', undefined, bearer('mtd_not-a-real-token'))).toMatchObject({ status: 401, body: { errcode: 'M_UNKNOWN_TOKEN' } });
    expect(await call('GET', '/v3/account/whoami?access_token=mtd_bogus')).toMatchObject({ status: 401, body: { errcode: 'M_UNKNOWN_TOKEN' } });
    // A token for a different case is a different token.
    expect((await call('GET', '/v3/account/whoami', undefined, bearer(u.token.toUpperCase()))).status).toBe(401);
  });
});

describe('logout', () => {
  it('invalidates the token and removes the device', async () => {
    const one = await TestClient.register(t.app, 'leaver', { deviceId: 'ONE' });
    const two = await TestClient.login(t.app, 'leaver', { deviceId: 'TWO' });
    expect(deviceIdsOf((await two.json('GET', '/v3/devices')).body)).toEqual(['ONE', 'TWO']);
    expect(await one.json('POST', '/v3/logout')).toEqual({ status: 200, body: {} });
    expect(await one.json('GET', '/v3/account/whoami')).toMatchObject({ status: 401, body: { errcode: 'M_UNKNOWN_TOKEN' } });
    expect(deviceIdsOf((await two.json('GET', '/v3/devices')).body)).toEqual(['TWO']);
    expect((await two.json('GET', '/v3/account/whoami')).status).toBe(200);
  });

  it('logout/all invalidates every token of the user and no one else\'s', async () => {
    const a = await TestClient.register(t.app, 'allleaver');
    const b = await TestClient.login(t.app, 'allleaver');
    const c = await TestClient.login(t.app, 'allleaver');
    const bystander = await TestClient.register(t.app, 'bystander');
    expect(await b.json('POST', '/v3/logout/all')).toEqual({ status: 200, body: {} });
    for (const client of [a, b, c]) {
      expect(await client.json('GET', '/v3/account/whoami')).toMatchObject({ status: 401, body: { errcode: 'M_UNKNOWN_TOKEN' } });
    }
    const fresh = await TestClient.login(t.app, 'allleaver');
    expect(deviceIdsOf((await fresh.json('GET', '/v3/devices')).body)).toEqual([fresh.deviceId]);
    expect((await bystander.json('GET', '/v3/account/whoami')).status).toBe(200);
  });
});

describe('devices', () => {
  let u: TestClient;
  beforeAll(async () => {
    u = await TestClient.register(t.app, 'devicer', { deviceId: 'D1' });
    await TestClient.login(t.app, 'devicer', { deviceId: 'D2' });
  });

  it('lists only the user\'s own devices', async () => {
    await TestClient.register(t.app, 'otherdevicer', { deviceId: 'D3' });
    expect(deviceIdsOf((await u.json('GET', '/v3/devices')).body)).toEqual(['D1', 'D2']);
  });

  it('shows one device and answers 404 M_NOT_FOUND for an unknown or someone else\'s device', async () => {
    expect(await u.json('GET', '/v3/devices/D2')).toEqual({ status: 200, body: { device_id: 'D2' } });
    expect(await u.json('GET', '/v3/devices/NOPE')).toMatchObject({ status: 404, body: { errcode: 'M_NOT_FOUND' } });
    expect(await u.json('GET', '/v3/devices/D3')).toMatchObject({ status: 404, body: { errcode: 'M_NOT_FOUND' } });
  });

  it('renames a device with PUT, leaves the name alone when display_name is absent, and 404s unknown devices', async () => {
    expect(await u.json('PUT', '/v3/devices/D2', { display_name: 'Laptop' })).toEqual({ status: 200, body: {} });
    expect((await u.json('GET', '/v3/devices/D2')).body).toEqual({ device_id: 'D2', display_name: 'Laptop' });
    const list = (await u.json<{ devices: Json[] }>('GET', '/v3/devices')).body.devices;
    expect(list.find((d) => d.device_id === 'D2')).toEqual({ device_id: 'D2', display_name: 'Laptop' });
    expect(await u.json('PUT', '/v3/devices/D2', {})).toEqual({ status: 200, body: {} });
    expect((await u.json('GET', '/v3/devices/D2')).body).toEqual({ device_id: 'D2', display_name: 'Laptop' });
    expect(await u.json('PUT', '/v3/devices/NOPE', { display_name: 'x' })).toMatchObject({ status: 404, body: { errcode: 'M_NOT_FOUND' } });
    expect(await u.json('PUT', '/v3/devices/D3', { display_name: 'hijack' })).toMatchObject({ status: 404, body: { errcode: 'M_NOT_FOUND' } });
  });

  it('needs a token', async () => {
    expect(await call('GET', '/v3/devices')).toMatchObject({ status: 401, body: { errcode: 'M_MISSING_TOKEN' } });
    expect(await call('POST', '/v3/delete_devices', { devices: [] })).toMatchObject({ status: 401, body: { errcode: 'M_MISSING_TOKEN' } });
  });
});

interface UiaChallenge {
  flows: { stages: string[] }[];
  session: string;
  errcode?: string;
}

function passwordAuth(user: string, password: string, session: string) {
  return { type: 'm.login.password', identifier: { type: 'm.id.user', user }, password, session };
}

describe('deleting devices (user-interactive auth)', () => {
  it('DELETE /devices/{id}: 401 challenge, wrong password 401 M_FORBIDDEN, right password deletes the device and kills its token', async () => {
    const gone = await TestClient.register(t.app, 'deleter', { deviceId: 'GONE' });
    const stay = await TestClient.login(t.app, 'deleter', { deviceId: 'STAY' });

    const challenge = await stay.json<UiaChallenge>('DELETE', '/v3/devices/GONE', {});
    expect(challenge.status).toBe(401);
    expect(challenge.body.flows).toEqual([{ stages: ['m.login.password'] }]);
    expect(challenge.body.session).toEqual(expect.any(String));
    expect((await gone.json('GET', '/v3/account/whoami')).status).toBe(200);

    const wrong = await stay.json<UiaChallenge>('DELETE', '/v3/devices/GONE', { auth: passwordAuth('deleter', 'wrong', challenge.body.session) });
    expect(wrong.status).toBe(401);
    expect(wrong.body).toMatchObject({ errcode: 'M_FORBIDDEN', flows: [{ stages: ['m.login.password'] }], session: challenge.body.session });
    expect((await gone.json('GET', '/v3/account/whoami')).status).toBe(200);

    const ok = await stay.json('DELETE', '/v3/devices/GONE', { auth: passwordAuth('deleter', 'correct horse', challenge.body.session) });
    expect(ok).toEqual({ status: 200, body: {} });
    expect(await stay.json('GET', '/v3/devices/GONE')).toMatchObject({ status: 404, body: { errcode: 'M_NOT_FOUND' } });
    expect(deviceIdsOf((await stay.json('GET', '/v3/devices')).body)).toEqual(['STAY']);
    expect(await gone.json('GET', '/v3/account/whoami')).toMatchObject({ status: 401, body: { errcode: 'M_UNKNOWN_TOKEN' } });
  });

  it('does not let a completed session be replayed, nor accept an invented one', async () => {
    const u = await TestClient.register(t.app, 'replayer', { deviceId: 'R1' });
    await TestClient.login(t.app, 'replayer', { deviceId: 'R2' });
    await TestClient.login(t.app, 'replayer', { deviceId: 'R3' });
    const challenge = await u.json<UiaChallenge>('DELETE', '/v3/devices/R2', {});
    expect((await u.json('DELETE', '/v3/devices/R2', { auth: passwordAuth('replayer', 'correct horse', challenge.body.session) })).status).toBe(200);
    const replay = await u.json('DELETE', '/v3/devices/R3', { auth: passwordAuth('replayer', 'correct horse', challenge.body.session) });
    expect(replay.status).not.toBe(200);
    const invented = await u.json('DELETE', '/v3/devices/R3', { auth: passwordAuth('replayer', 'correct horse', 'made-up-session') });
    expect(invented.status).not.toBe(200);
    expect(deviceIdsOf((await u.json('GET', '/v3/devices')).body)).toEqual(['R1', 'R3']);
  });

  it('does not accept another user\'s session or password', async () => {
    const victim = await TestClient.register(t.app, 'victim', { deviceId: 'V1' });
    await TestClient.login(t.app, 'victim', { deviceId: 'V2' });
    const attacker = await TestClient.register(t.app, 'attacker', { password: 'attacker pw' });
    const attackerChallenge = await attacker.json<UiaChallenge>('POST', '/v3/delete_devices', { devices: [] });
    // The victim's token with the attacker's (own, valid) credentials and session.
    const res = await victim.json('DELETE', '/v3/devices/V2', { auth: passwordAuth('attacker', 'attacker pw', attackerChallenge.body.session) });
    expect(res.status).not.toBe(200);
    expect(deviceIdsOf((await victim.json('GET', '/v3/devices')).body)).toEqual(['V1', 'V2']);
  });

  it('POST /delete_devices: the same challenge, wrong password refused, then deletes several devices and their tokens', async () => {
    const u = await TestClient.register(t.app, 'bulkdel', { deviceId: 'A' });
    const b = await TestClient.login(t.app, 'bulkdel', { deviceId: 'B' });
    const c = await TestClient.login(t.app, 'bulkdel', { deviceId: 'C' });
    const challenge = await u.json<UiaChallenge>('POST', '/v3/delete_devices', { devices: ['B', 'C', 'NOT-A-DEVICE'] });
    expect(challenge.status).toBe(401);
    expect(challenge.body.flows).toEqual([{ stages: ['m.login.password'] }]);
    expect(challenge.body.session).toEqual(expect.any(String));

    const wrong = await u.json('POST', '/v3/delete_devices', { devices: ['B', 'C', 'NOT-A-DEVICE'], auth: passwordAuth(u.userId, 'wrong', challenge.body.session) });
    expect(wrong).toMatchObject({ status: 401, body: { errcode: 'M_FORBIDDEN', session: challenge.body.session } });
    expect(deviceIdsOf((await u.json('GET', '/v3/devices')).body)).toEqual(['A', 'B', 'C']);

    const ok = await u.json('POST', '/v3/delete_devices', { devices: ['B', 'C', 'NOT-A-DEVICE'], auth: passwordAuth(u.userId, 'correct horse', challenge.body.session) });
    expect(ok).toEqual({ status: 200, body: {} });
    expect(deviceIdsOf((await u.json('GET', '/v3/devices')).body)).toEqual(['A']);
    for (const dead of [b, c]) {
      expect(await dead.json('GET', '/v3/account/whoami')).toMatchObject({ status: 401, body: { errcode: 'M_UNKNOWN_TOKEN' } });
    }
  });

  it('purges the pending to-device messages of a deleted device', async () => {
    const keeper = await TestClient.register(t.app, 'purger', { deviceId: 'KEEPER' });
    const doomed = await TestClient.login(t.app, 'purger', { deviceId: 'DOOMED' });
    const sender = await TestClient.register(t.app, 'purgesender');
    const sent = await sender.request('PUT', '/v3/sendToDevice/m.test.pending/txn-purge-1', {
      messages: { [doomed.userId]: { DOOMED: { lost: 'with the device' }, KEEPER: { kept: 'by the other device' } } },
    });
    expect(sent.status).toBe(200);

    const challenge = await keeper.json<UiaChallenge>('DELETE', '/v3/devices/DOOMED', {});
    expect((await keeper.json('DELETE', '/v3/devices/DOOMED', { auth: passwordAuth('purger', 'correct horse', challenge.body.session) })).status).toBe(200);

    // A new login with the same device ID starts with an empty queue…
    const back = await TestClient.login(t.app, 'purger', { deviceId: 'DOOMED' });
    expect((await back.sync()).to_device.events).toEqual([]);
    // …while the message for the device that was not deleted is still there.
    expect((await keeper.sync()).to_device.events).toEqual([{ sender: sender.userId, type: 'm.test.pending', content: { kept: 'by the other device' } }]);
  });
});

describe('secrets at rest', () => {
  it('stores passwords only as salted hashes and access tokens only hashed', async () => {
    const password = 'hunter2-very-secret';
    const first = await TestClient.register(t.app, 'secretive', { password });
    const second = await TestClient.login(t.app, 'secretive', { password });
    const sameName = await TestClient.register(t.app, 'secretive2', { password });

    const userRows = await t.database.db.select().from(users);
    const deviceRows = await t.database.db.select().from(devices);
    const dump = JSON.stringify([userRows, deviceRows]);
    expect(dump).not.toContain(password);
    for (const token of [first.token, second.token, sameName.token]) {
      expect(dump).not.toContain(token);
      // Nor the random part without the recognisable prefix.
      expect(dump).not.toContain(token.replace(/^mtd_/, ''));
    }

    const hashes = userRows.filter((r) => r.userId === first.userId || r.userId === sameName.userId).map((r) => r.passwordHash);
    expect(hashes).toHaveLength(2);
    // Salted: the same password gives different hashes.
    expect(hashes[0]).not.toBe(hashes[1]);
    const ours = deviceRows.filter((r) => r.userId === first.userId);
    expect(ours).toHaveLength(2);
    for (const row of ours) expect(row.tokenHash).toEqual(expect.any(String));
  });
});
