import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { devices, users } from '../src/storage/schema.ts';
import { TestClient } from './support/client.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

let t: TestApp;

beforeAll(async () => {
  t = await startTestApp();
});
afterAll(() => t.close());

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await t.app.request(`/_matrix/client${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('registration', () => {
  it('answers GET /versions', async () => {
    const res = await t.app.request('/_matrix/client/versions');
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ versions: expect.arrayContaining(['v1.11']) });
  });

  it('challenges with m.login.dummy, then registers and logs in', async () => {
    const challenge = await post('/v3/register', { username: 'reg1', password: 'pw' });
    expect(challenge.status).toBe(401);
    expect(challenge.body).toMatchObject({ flows: [{ stages: ['m.login.dummy'] }], session: expect.any(String) });
    const done = await post('/v3/register', { username: 'reg1', password: 'pw', auth: { type: 'm.login.dummy', session: challenge.body.session } });
    expect(done).toMatchObject({ status: 200, body: { user_id: `@reg1:${SERVER_NAME}`, access_token: expect.any(String), device_id: expect.any(String) } });
    const whoami = await t.app.request('/_matrix/client/v3/account/whoami', { headers: { authorization: `Bearer ${String(done.body.access_token)}` } });
    expect(await whoami.json()).toEqual({ user_id: `@reg1:${SERVER_NAME}`, device_id: done.body.device_id, is_guest: false });
  });

  it('refuses taken and invalid usernames, and reports availability', async () => {
    await TestClient.register(t.app, 'taken');
    expect((await post('/v3/register', { username: 'taken', password: 'pw', auth: { type: 'm.login.dummy' } })).body.errcode).toBe('M_USER_IN_USE');
    for (const username of ['Upper', 'sp ace', 'a:b']) {
      const res = await post('/v3/register', { username, password: 'pw', auth: { type: 'm.login.dummy' } });
      expect(res).toMatchObject({ status: 400, body: { errcode: 'M_INVALID_USERNAME' } });
    }
    expect((await t.app.request('/_matrix/client/v3/register/available?username=freeone')).status).toBe(200);
    expect((await (await t.app.request('/_matrix/client/v3/register/available?username=taken')).json()) as object).toMatchObject({ errcode: 'M_USER_IN_USE' });
  });

  it('honours inhibit_login, a chosen device_id, and refuses guests', async () => {
    const inhibited = await post('/v3/register', { username: 'quietreg', password: 'pw', inhibit_login: true, auth: { type: 'm.login.dummy' } });
    expect(inhibited).toEqual({ status: 200, body: { user_id: `@quietreg:${SERVER_NAME}` } });
    const chosen = await post('/v3/register', { username: 'devreg', password: 'pw', device_id: 'MYDEVICE', auth: { type: 'm.login.dummy' } });
    expect(chosen.body.device_id).toBe('MYDEVICE');
    const guest = await t.app.request('/_matrix/client/v3/register?kind=guest', { method: 'POST', body: '{}' });
    expect(guest.status).toBe(403);
    expect(await guest.json()).toMatchObject({ errcode: 'M_GUEST_ACCESS_FORBIDDEN' });
  });

  it('is refused when registration is disabled', async () => {
    const closed = await startTestApp({ registration: { enabled: false } });
    try {
      const res = await closed.app.request('/_matrix/client/v3/register', { method: 'POST', body: JSON.stringify({ username: 'x', password: 'y', auth: { type: 'm.login.dummy' } }) });
      expect(res.status).toBe(403);
      expect(await res.json()).toMatchObject({ errcode: 'M_FORBIDDEN' });
    } finally {
      await closed.close();
    }
  });

  it('stores neither the password nor the token in clear', async () => {
    const u = await TestClient.register(t.app, 'secretive', { password: 'hunter2-very-secret' });
    const [user] = await t.database.db.select().from(users).where(eq(users.userId, u.userId));
    const [device] = await t.database.db.select().from(devices).where(eq(devices.userId, u.userId));
    expect(user?.passwordHash).toMatch(/^scrypt\$/);
    expect(user?.passwordHash).not.toContain('hunter2');
    expect(device?.tokenHash).not.toBe(u.token);
    expect(JSON.stringify(device)).not.toContain(u.token);
  });
});

describe('login and tokens', () => {
  it('offers m.login.password and accepts a localpart, a full user ID and the deprecated user field', async () => {
    expect(await (await t.app.request('/_matrix/client/v3/login')).json()).toEqual({ flows: [{ type: 'm.login.password' }] });
    await TestClient.register(t.app, 'logan');
    await TestClient.login(t.app, 'logan');
    await TestClient.login(t.app, `@logan:${SERVER_NAME}`);
    const legacy = await post('/v3/login', { type: 'm.login.password', user: 'logan', password: 'correct horse' });
    expect(legacy.status).toBe(200);
  });

  it('refuses a wrong password and unknown login types', async () => {
    const wrong = await post('/v3/login', { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'logan' }, password: 'nope' });
    expect(wrong).toMatchObject({ status: 403, body: { errcode: 'M_FORBIDDEN' } });
    const unknownUser = await post('/v3/login', { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'nobody' }, password: 'x' });
    expect(unknownUser).toMatchObject({ status: 403, body: { errcode: 'M_FORBIDDEN' } });
    const sso = await post('/v3/login', { type: 'm.login.sso' });
    expect(sso).toMatchObject({ status: 400, body: { errcode: 'M_UNKNOWN' } });
  });

  it('gives a reused device_id a new token, keeps the device and its queue', async () => {
    const first = await TestClient.register(t.app, 'reuse', { deviceId: 'KEEP' });
    await first.sendToDevice('m.kept', { [first.userId]: { KEEP: { kept: true } } });
    const second = await TestClient.login(t.app, 'reuse', { deviceId: 'KEEP' });
    expect((await first.request('GET', '/v3/account/whoami')).status).toBe(401);
    const list = await second.json<{ devices: { device_id: string }[] }>('GET', '/v3/devices');
    expect(list.body.devices.map((d) => d.device_id)).toEqual(['KEEP']);
    expect((await second.sync()).to_device.events).toEqual([{ sender: first.userId, type: 'm.kept', content: { kept: true } }]);
  });

  it('accepts the deprecated ?access_token= and distinguishes missing from unknown tokens', async () => {
    const u = await TestClient.register(t.app, 'querytoken');
    expect((await t.app.request(`/_matrix/client/v3/account/whoami?access_token=${encodeURIComponent(u.token)}`)).status).toBe(200);
    const missing = await t.app.request('/_matrix/client/v3/account/whoami');
    expect(missing.status).toBe(401);
    expect(await missing.json()).toMatchObject({ errcode: 'M_MISSING_TOKEN' });
    const unknown = await t.app.request('/_matrix/client/v3/account/whoami', { headers: { authorization: 'Bearer mtd_unknown' } });
    expect(unknown.status).toBe(401);
    expect(await unknown.json()).toMatchObject({ errcode: 'M_UNKNOWN_TOKEN' });
  });

  it('logs out one device, and all devices', async () => {
    const one = await TestClient.register(t.app, 'leaver');
    const two = await TestClient.login(t.app, 'leaver');
    const three = await TestClient.login(t.app, 'leaver');
    expect((await one.request('POST', '/v3/logout')).status).toBe(200);
    expect((await one.request('GET', '/v3/account/whoami')).status).toBe(401);
    const list = await two.json<{ devices: { device_id: string }[] }>('GET', '/v3/devices');
    expect(list.body.devices.map((d) => d.device_id).sort()).toEqual([two.deviceId, three.deviceId].sort());
    expect((await two.request('POST', '/v3/logout/all')).status).toBe(200);
    expect((await three.request('GET', '/v3/account/whoami')).status).toBe(401);
  });
});

describe('devices', () => {
  it('lists, shows, renames devices and answers 404 for others', async () => {
    const u = await TestClient.register(t.app, 'devicer', { deviceId: 'D1' });
    expect((await u.json('PUT', '/v3/devices/D1', { display_name: 'Laptop' })).status).toBe(200);
    expect((await u.json('GET', '/v3/devices/D1')).body).toMatchObject({ device_id: 'D1', display_name: 'Laptop' });
    expect(await u.json('GET', '/v3/devices/NOPE')).toMatchObject({ status: 404, body: { errcode: 'M_NOT_FOUND' } });
  });

  it('deletes a device with user-interactive password auth, purging its queue', async () => {
    const u = await TestClient.register(t.app, 'deleter', { deviceId: 'GONE' });
    const other = await TestClient.login(t.app, 'deleter', { deviceId: 'STAY' });
    await other.sendToDevice('m.pending', { [u.userId]: { GONE: { lost: 'with the device' } } });

    const challenge = await other.json<{ session: string; flows: unknown }>('DELETE', '/v3/devices/GONE', {});
    expect(challenge.status).toBe(401);
    expect(challenge.body.flows).toEqual([{ stages: ['m.login.password'] }]);
    const auth = (password: string) => ({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'deleter' }, password, session: challenge.body.session });
    const wrong = await other.json('DELETE', '/v3/devices/GONE', { auth: auth('wrong') });
    expect(wrong).toMatchObject({ status: 401, body: { errcode: 'M_FORBIDDEN' } });
    expect((await other.json('DELETE', '/v3/devices/GONE', { auth: auth('correct horse') })).status).toBe(200);

    expect((await u.request('GET', '/v3/account/whoami')).status).toBe(401);
    // Logging in again with the same device ID starts with an empty queue.
    const back = await TestClient.login(t.app, 'deleter', { deviceId: 'GONE' });
    expect((await back.sync()).to_device.events).toEqual([]);
  });

  it('deletes several devices with POST /delete_devices', async () => {
    const u = await TestClient.register(t.app, 'bulkdel', { deviceId: 'A' });
    await TestClient.login(t.app, 'bulkdel', { deviceId: 'B' });
    await TestClient.login(t.app, 'bulkdel', { deviceId: 'C' });
    const challenge = await u.json<{ session: string }>('POST', '/v3/delete_devices', { devices: ['B', 'C'] });
    expect(challenge.status).toBe(401);
    const ok = await u.json('POST', '/v3/delete_devices', {
      devices: ['B', 'C'],
      auth: { type: 'm.login.password', identifier: { type: 'm.id.user', user: u.userId }, password: 'correct horse', session: challenge.body.session },
    });
    expect(ok.status).toBe(200);
    const list = await u.json<{ devices: { device_id: string }[] }>('GET', '/v3/devices');
    expect(list.body.devices.map((d) => d.device_id)).toEqual(['A']);
  });
});
