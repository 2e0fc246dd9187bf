import * as v from 'valibot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import ping from '../handlers/ping/index.ts';
import { defineHandler, type HandlerModule, type ServerUserEvent } from '../src/sdk/define-handler.ts';
import { DISPATCH_COUNTER, HandlerLoadError } from '../src/server-user/dispatcher.ts';
import { loadHandlerModules } from '../src/server-user/loader.ts';
import { hashToken } from '../src/crypto/tokens.ts';
import { AccountsStore } from '../src/storage/accounts-store.ts';
import { deviceInbox, federationOutbox } from '../src/storage/schema.ts';
import { TestClient } from './support/client.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';
import { TestClock } from '../src/testing/test-clock.ts';

const SERVER_USER = `@:${SERVER_NAME}`;
const seen: ServerUserEvent<unknown>[] = [];
let release: () => void = () => {};

const recorder = defineHandler({
  name: 'recorder',
  config: v.object({ label: v.string() }),
  events: {
    'org.test.record': {
      schema: v.object({ n: v.number() }),
      handle(event, ctx) {
        seen.push(event);
        expect(ctx.config.label).toBe('configured');
      },
    },
    'org.test.broadcast': {
      schema: v.object({ to: v.string(), device: v.string() }),
      async handle(event, ctx) {
        await ctx.send('org.test.broadcasted', { from: event.sender }, { userId: event.content.to, deviceId: event.content.device });
      },
    },
    'org.test.throw': {
      schema: v.object({}),
      handle() {
        throw new Error('handler bug');
      },
    },
    'org.test.reject': {
      schema: v.object({}),
      async handle() {
        await Promise.resolve();
        throw new Error('async handler bug');
      },
    },
    'org.test.hang': {
      schema: v.object({}),
      handle() {
        return new Promise<void>((resolve) => (release = resolve));
      },
    },
  },
});

let t: TestApp;
let alice: TestClient;
let bob: TestClient;

const count = (type: string, outcome: string) => t.services.counters.get(DISPATCH_COUNTER, { type, outcome });

// The dispatch deadline is on the server's clock: the deadline test moves it.
const clock = new TestClock();

beforeAll(async () => {
  t = await startTestApp(
    { server_user: { dispatch_deadline_ms: 1_500 } },
    [{ module: ping as HandlerModule<unknown> }, { module: recorder as HandlerModule<unknown>, config: { label: 'configured' } }],
    { clock },
  );
  alice = await TestClient.register(t.app, 'alice');
  bob = await TestClient.register(t.app, 'bob');
});
afterAll(() => {
  release();
  return t.close();
});

describe('MSC4246 server user', () => {
  it('answers a ping with a pong in the sender\'s queue by the time the request returns', async () => {
    const res = await alice.sendToDevice('org.example.ping', { [SERVER_USER]: { '': { nonce: 'abc' } } });
    expect(res).toEqual({ status: 200, body: {} });
    const s = await alice.sync();
    expect(s.to_device.events).toEqual([
      { sender: SERVER_USER, type: 'org.example.pong', content: { nonce: 'abc', server_ts: expect.any(Number) } },
    ]);
    await alice.sync({ since: s.next_batch });
  });

  it('rewrites * to the device "" and dispatches once even when both are named', async () => {
    const before = seen.length;
    await alice.sendToDevice('org.test.record', { [SERVER_USER]: { '*': { n: 1 } } });
    await alice.sendToDevice('org.test.record', { [SERVER_USER]: { '*': { n: 2 }, '': { n: 2 } } });
    const mine = seen.slice(before);
    expect(mine.map((e) => e.content)).toEqual([{ n: 1 }, { n: 2 }]);
    expect(mine[0]).toEqual({
      type: 'org.test.record',
      sender: alice.userId,
      senderDevice: alice.deviceId,
      origin: 'client',
      content: { n: 1 },
    });
  });

  it('drops messages to any other device of the server user, counted', async () => {
    const before = seen.length;
    const dropped = t.services.counters.get('to_device_dropped_total', { reason: 'server_user_device' });
    const res = await alice.sendToDevice('org.test.record', { [SERVER_USER]: { SOMEDEVICE: { n: 3 } } });
    expect(res.status).toBe(200);
    expect(seen.length).toBe(before);
    expect(t.services.counters.get('to_device_dropped_total', { reason: 'server_user_device' })).toBe(dropped + 1);
  });

  it('stores nothing in any queue for server-user messages', async () => {
    const inbox = (await t.database.db.select().from(deviceInbox)).length;
    const outbox = (await t.database.db.select().from(federationOutbox)).length;
    await alice.sendToDevice('org.test.record', { [SERVER_USER]: { '': { n: 4 } } });
    await alice.sendToDevice('org.unknown.type', { [SERVER_USER]: { '': { x: 1 } } });
    await alice.sendToDevice('org.test.record', { [SERVER_USER]: { '': { n: 'not a number' } } });
    expect((await t.database.db.select().from(deviceInbox)).length).toBe(inbox);
    expect((await t.database.db.select().from(federationOutbox)).length).toBe(outbox);
  });

  it('drops unknown types and invalid content with a 200, counting each', async () => {
    const unknown = count('org.unknown.kind', 'unknown_type');
    const invalid = count('org.test.record', 'invalid_content');
    const before = seen.length;
    expect((await alice.sendToDevice('org.unknown.kind', { [SERVER_USER]: { '': {} } })).status).toBe(200);
    expect((await alice.sendToDevice('org.test.record', { [SERVER_USER]: { '': { n: 'x' } } })).status).toBe(200);
    expect(count('org.unknown.kind', 'unknown_type')).toBe(unknown + 1);
    expect(count('org.test.record', 'invalid_content')).toBe(invalid + 1);
    expect(seen.length).toBe(before);
  });

  it('keeps a throwing or rejecting handler from changing the response or other handlers', async () => {
    const thrown = count('org.test.throw', 'error');
    const rejected = count('org.test.reject', 'error');
    expect(await alice.sendToDevice('org.test.throw', { [SERVER_USER]: { '': {} } })).toEqual({ status: 200, body: {} });
    expect(await alice.sendToDevice('org.test.reject', { [SERVER_USER]: { '': {} } })).toEqual({ status: 200, body: {} });
    expect(count('org.test.throw', 'error')).toBe(thrown + 1);
    expect(count('org.test.reject', 'error')).toBe(rejected + 1);
    await alice.sendToDevice('org.example.ping', { [SERVER_USER]: { '': { nonce: 'after-throw' } } });
    const s = await alice.sync();
    expect(s.to_device.events.map((e) => e.content.nonce)).toContain('after-throw');
    await alice.sync({ since: s.next_batch });
  });

  it('answers at the deadline when a handler hangs, and other handlers run meanwhile', async () => {
    const timeouts = count('org.test.hang', 'timeout');
    const timersBefore = clock.pending;
    let answered = false;
    const hanging = alice.sendToDevice('org.test.hang', { [SERVER_USER]: { '': {} } }).finally(() => (answered = true));
    // The request has reached the dispatcher once its deadline is set.
    while (clock.pending === timersBefore) await new Promise((r) => setImmediate(r));
    const pinged = await bob.sendToDevice('org.example.ping', { [SERVER_USER]: { '': { nonce: 'meanwhile' } } });
    expect(pinged.status).toBe(200);
    await clock.advance(1_499);
    // Unanswered up to the deadline's last millisecond, however long the turns above took.
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    expect(answered).toBe(false);
    await clock.advance(1);
    const res = await hanging;
    expect(res).toEqual({ status: 200, body: {} });
    expect(count('org.test.hang', 'timeout')).toBe(timeouts + 1);
    const s = await bob.sync();
    expect(s.to_device.events.map((e) => e.content.nonce)).toContain('meanwhile');
    await bob.sync({ since: s.next_batch });
    release();
  });

  it('wakes the recipient\'s long-poll with a message sent by a handler as the server user', async () => {
    const initial = await bob.sync();
    const polling = bob.sync({ since: initial.next_batch, timeout: 20_000 });
    await new Promise((r) => setTimeout(r, 50));
    await alice.sendToDevice('org.test.broadcast', { [SERVER_USER]: { '': { to: bob.userId, device: '*' } } });
    const s = await polling;
    expect(s.to_device.events).toEqual([{ sender: SERVER_USER, type: 'org.test.broadcasted', content: { from: alice.userId } }]);
    await bob.sync({ since: s.next_batch });
  });

  it('sends handler messages for remote users to the federation outbox as the server user', async () => {
    await alice.sendToDevice('org.test.broadcast', { [SERVER_USER]: { '': { to: '@zoe:remote.example', device: 'ZOE' } } });
    const rows = await t.database.db.select().from(federationOutbox);
    const row = rows.find((r) => r.type === 'org.test.broadcasted');
    expect(row).toMatchObject({ destination: 'remote.example', sender: SERVER_USER, userId: '@zoe:remote.example', deviceId: 'ZOE' });
  });

  it('sends messages for another server\'s server user to the federation outbox', async () => {
    await alice.sendToDevice('org.example.ping', { '@:remote.example': { '': { nonce: 'remote' } } });
    const rows = await t.database.db.select().from(federationOutbox);
    expect(rows.find((r) => r.userId === '@:remote.example')).toMatchObject({ destination: 'remote.example', deviceId: '', sender: alice.userId });
  });
});

describe('the server user cannot be an account', () => {
  it('refuses to register the empty localpart', async () => {
    const res = await t.app.request('/_matrix/client/v3/register', {
      method: 'POST',
      body: JSON.stringify({ username: '', password: 'x', auth: { type: 'm.login.dummy' } }),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ errcode: 'M_INVALID_USERNAME' });
  });

  it('refuses to log in as @:server', async () => {
    for (const user of [SERVER_USER, '']) {
      const res = await t.app.request('/_matrix/client/v3/login', {
        method: 'POST',
        body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user }, password: 'x' }),
      });
      expect(res.status).toBe(403);
      expect(await res.json()).toMatchObject({ errcode: 'M_FORBIDDEN' });
    }
  });

  it('takes over an account with that ID that predates the reservation', async () => {
    const store = new AccountsStore(t.database.db);
    const { hashPassword } = await import('../src/crypto/passwords.ts');
    await store.createUser(SERVER_USER, '', await hashPassword('old password'));
    await store.upsertDevice(SERVER_USER, 'OLDDEVICE', null, hashToken('old-token'));
    const login = await t.app.request('/_matrix/client/v3/login', {
      method: 'POST',
      body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: SERVER_USER }, password: 'old password' }),
    });
    expect(login.status).toBe(403);
    const whoami = await t.app.request('/_matrix/client/v3/account/whoami', { headers: { authorization: 'Bearer old-token' } });
    expect(whoami.status).toBe(401);
    expect(await whoami.json()).toMatchObject({ errcode: 'M_UNKNOWN_TOKEN' });
    // Messages to its old device are not stored for it either.
    const inbox = (await t.database.db.select().from(deviceInbox)).length;
    await alice.sendToDevice('m.test', { [SERVER_USER]: { OLDDEVICE: {} } });
    expect((await t.database.db.select().from(deviceInbox)).length).toBe(inbox);
  });
});

describe('loading handler modules', () => {
  it('validates handler config at start', async () => {
    await expect(startTestApp({}, [{ module: recorder as HandlerModule<unknown>, config: { label: 42 } }])).rejects.toThrow(
      /handler module "recorder" config\.label/,
    );
  });

  it('refuses a module loaded twice and two modules claiming one event type', async () => {
    const clash = defineHandler({ name: 'clash', events: { 'org.example.ping': { schema: v.object({}), handle() {} } } });
    const err = await startTestApp({}, [
      { module: ping as HandlerModule<unknown> },
      { module: ping as HandlerModule<unknown> },
      { module: clash as HandlerModule<unknown> },
    ]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HandlerLoadError);
    expect((err as HandlerLoadError).problems).toEqual([
      { code: 'TDS_ERR_MODULE_DUPLICATE', message: 'handler module "ping" is loaded twice' },
      { code: 'TDS_ERR_EVENT_TYPE_TAKEN', message: 'event type "org.example.ping" is claimed by both "ping" and "clash"' },
    ]);
  });

  it('loads modules by folder name from handlers/ and reports unknown ones', async () => {
    const loaded = await loadHandlerModules([{ module: 'ping' }]);
    expect(loaded.map((l) => l.module.name)).toEqual(['ping']);
    await expect(loadHandlerModules([{ module: 'no-such-module' }])).rejects.toThrow(/handler module "no-such-module" not found/);
  });
});
