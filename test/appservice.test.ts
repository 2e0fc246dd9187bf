/**
 * MSC4203 with a real appservice: matrix-bot-sdk's `Appservice` class, on loopback.
 *
 * matrix-bot-sdk require()s @matrix-org/matrix-sdk-crypto-nodejs at load time, and that
 * package's install downloads a native binary from outside the npm registry, which these
 * machines cannot reach. No crypto is used here, so package.json `overrides` points the
 * dependency at test/support/crypto-stub, whose exports throw if ever used.
 */
import { Appservice, LogLevel, LogService, MemoryStorageProvider, type IAppserviceRegistration } from 'matrix-bot-sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppserviceRegistry } from '../src/appservice/registration.ts';
import { LINGER_MS } from '../src/appservice/appservice-sender.ts';
import { appservicePendingTxns, appserviceQueue, deviceInbox } from '../src/storage/schema.ts';
import { overHttp, TestClient } from './support/client.ts';
import { serveOverHttp } from './support/http-server.ts';
import { startRecordingProxy } from './support/recording-proxy.ts';
import { freePort } from './support/server-process.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

LogService.setLevel(LogLevel.ERROR);

interface ToDeviceItem {
  type: string;
  sender: string;
  content: Record<string, unknown>;
  to_user_id: string;
  to_device_id: string;
}

const registration = (id: string, url: string, regex: string, opts: { exclusive?: boolean; optIn?: boolean; hsToken?: string } = {}) => ({
  id,
  url,
  as_token: `as-${id}`,
  hs_token: opts.hsToken ?? `hs-${id}`,
  sender_localpart: `${id}bot`,
  namespaces: { users: [{ exclusive: opts.exclusive ?? true, regex }], rooms: [], aliases: [] },
  'de.sorunome.msc2409.push_ephemeral': opts.optIn ?? true,
  rate_limited: false,
});

let t: TestApp;
let http: Awaited<ReturnType<typeof serveOverHttp>>;
let proxy: Awaited<ReturnType<typeof startRecordingProxy>>;
// The bridges' ports are taken just before each starts (a port found free long before may be
// taken by then); the server reaches them through proxies, whose addresses never change.
let bridgePort = 0;
let bridge: Appservice;
const received: ToDeviceItem[] = [];
let alice: TestClient;

async function startBridge(
  reg: IAppserviceRegistration,
  sink: ToDeviceItem[] = received,
  usePort: (port: number) => void = (port) => {
    bridgePort = port;
  },
): Promise<Appservice> {
  const port = await freePort();
  usePort(port);
  const as = new Appservice({
    port,
    bindAddress: '127.0.0.1',
    homeserverName: SERVER_NAME,
    homeserverUrl: http.baseUrl,
    registration: reg,
    storage: new MemoryStorageProvider(),
  });
  as.on('ephemeral.event', (e: ToDeviceItem) => sink.push(e));
  await as.begin();
  return as;
}

async function until(predicate: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function registerAsUser(asToken: string, username: string, deviceId: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await t.app.request('/_matrix/client/v3/register', {
    method: 'POST',
    headers: { authorization: `Bearer ${asToken}` },
    body: JSON.stringify({ type: 'm.login.application_service', username, device_id: deviceId }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const bridgeReg = () => registration('bridge', proxy.baseUrl, `@bridge_.*:${SERVER_NAME}`);
let sharedPort = 0;
let sharedProxy: Awaited<ReturnType<typeof startRecordingProxy>>;
const sharedReg = () => registration('shared', sharedProxy.baseUrl, `@shared_.*:${SERVER_NAME}`, { exclusive: false });

beforeAll(async () => {
  proxy = await startRecordingProxy(() => `http://127.0.0.1:${bridgePort}`);
  sharedProxy = await startRecordingProxy(() => `http://127.0.0.1:${sharedPort}`);
  const registry = AppserviceRegistry.fromFiles(
    [
      { source: 'bridge.yaml', content: bridgeReg() },
      { source: 'shared.yaml', content: sharedReg() },
      { source: 'quiet.yaml', content: registration('quiet', proxy.baseUrl, `@quiet_.*:${SERVER_NAME}`, { optIn: false }) },
    ],
    SERVER_NAME,
  );
  t = await startTestApp({ federation: { backoff_initial_ms: 100, backoff_max_ms: 300 } }, undefined, { appservices: registry });
  http = await serveOverHttp(t);
  bridge = await startBridge(bridgeReg() as unknown as IAppserviceRegistration);
  alice = await TestClient.register(t.app, 'alice');
  expect((await registerAsUser('as-bridge', 'bridge_u1', 'BRIDGEDEV')).status).toBe(200);
}, 60_000);

afterAll(async () => {
  bridge?.stop();
  await proxy?.close();
  await sharedProxy?.close();
  await http?.close();
  await t?.close();
});

describe('appservices (MSC4203) with matrix-bot-sdk', () => {
  it('receives a message sent by an ordinary user to one of its users, then it leaves the device queue', async () => {
    const before = received.length;
    await alice.sendToDevice('m.hello', { [`@bridge_u1:${SERVER_NAME}`]: { BRIDGEDEV: { text: 'hi bridge' } } });
    await until(() => received.length > before);
    expect(received.slice(before)).toEqual([
      expect.objectContaining({ type: 'm.hello', sender: alice.userId, content: { text: 'hi bridge' }, to_user_id: `@bridge_u1:${SERVER_NAME}`, to_device_id: 'BRIDGEDEV' }),
    ]);
    // Exclusive namespace: acknowledged by the appservice, so it leaves the device's queue.
    const pendingFor = async () => (await t.database.db.select().from(deviceInbox)).filter((r) => r.userId === `@bridge_u1:${SERVER_NAME}`);
    const deadline = Date.now() + 10_000;
    while ((await pendingFor()).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(await pendingFor()).toEqual([]);
  });

  it('sends to-device as a masqueraded user and device, and the recipient gets it', async () => {
    const intent = bridge.getIntentForUserId(`@bridge_u1:${SERVER_NAME}`);
    intent.underlyingClient.impersonateUserId(`@bridge_u1:${SERVER_NAME}`, 'BRIDGEDEV');
    await intent.underlyingClient.sendToDevices('m.from_bridge', { [alice.userId]: { [alice.deviceId]: { n: 1 } } });
    const s = await alice.sync();
    expect(s.to_device.events).toEqual([{ sender: `@bridge_u1:${SERVER_NAME}`, type: 'm.from_bridge', content: { n: 1 } }]);
    await alice.sync({ since: s.next_batch });
  });

  it('pings @:server as its user and receives the pong in a transaction', async () => {
    const before = received.length;
    const intent = bridge.getIntentForUserId(`@bridge_u1:${SERVER_NAME}`);
    intent.underlyingClient.impersonateUserId(`@bridge_u1:${SERVER_NAME}`, 'BRIDGEDEV');
    await intent.underlyingClient.sendToDevices('org.example.ping', { [`@:${SERVER_NAME}`]: { '': { nonce: 'bridge' } } });
    await until(() => received.length > before);
    expect(received.slice(before)).toEqual([
      expect.objectContaining({ type: 'org.example.pong', sender: `@:${SERVER_NAME}`, to_user_id: `@bridge_u1:${SERVER_NAME}`, to_device_id: 'BRIDGEDEV', content: expect.objectContaining({ nonce: 'bridge' }) }),
    ]);
  });

  it('delivers 250 messages sent while it was down, in order, once each, ≤ 100 per transaction', async () => {
    bridge.stop();
    await new Promise((r) => setTimeout(r, 100));
    const before = received.length;
    const firstRequest = proxy.requests.length;
    for (let i = 0; i < 250; i++) {
      expect((await alice.sendToDevice('m.backlog', { [`@bridge_u1:${SERVER_NAME}`]: { BRIDGEDEV: { i } } })).status).toBe(200);
    }
    await new Promise((r) => setTimeout(r, 500));
    bridge = await startBridge(bridgeReg() as unknown as IAppserviceRegistration);
    await until(() => received.length - before >= 250, 30_000);
    await new Promise((r) => setTimeout(r, 300));
    const got = received.slice(before).filter((e) => e.type === 'm.backlog').map((e) => e.content.i);
    expect(got).toEqual(Array.from({ length: 250 }, (_, i) => i));
    const txns = proxy.requests.slice(firstRequest).filter((r) => r.url.startsWith('/_matrix/app/v1/transactions/'));
    expect(txns.some((r) => r.status === 502)).toBe(true);
    for (const r of txns) {
      const body = r.body as { events: unknown[]; to_device: unknown[]; 'de.sorunome.msc2409.to_device': unknown[] };
      expect(body.events).toEqual([]);
      expect(body.to_device.length).toBeLessThanOrEqual(100);
      expect(body['de.sorunome.msc2409.to_device']).toEqual(body.to_device);
    }
    // Every retry of a transaction repeated its body exactly.
    const bodies = new Map<string, string>();
    for (const r of txns) {
      const previous = bodies.get(r.url);
      if (previous !== undefined) expect(JSON.stringify(r.body)).toBe(previous);
      bodies.set(r.url, JSON.stringify(r.body));
    }
  }, 90_000);

  it(`sends a trickle at most every ${LINGER_MS} ms, gathering what arrives meanwhile; afterwards nothing is left queued`, async () => {
    const before = received.length;
    const firstRequest = proxy.requests.length;
    const n = 100;
    // One send every 2 ms or so: a sender that went at once would carry one or two per transaction.
    for (let i = 0; i < n; i++) {
      expect((await alice.sendToDevice('m.trickle', { [`@bridge_u1:${SERVER_NAME}`]: { BRIDGEDEV: { i } } })).status).toBe(200);
      await new Promise((r) => setTimeout(r, 2));
    }
    await until(() => received.slice(before).filter((e) => e.type === 'm.trickle').length >= n, 30_000);
    const got = received.slice(before).filter((e) => e.type === 'm.trickle').map((e) => e.content.i as number);
    expect(got).toEqual(Array.from({ length: n }, (_, i) => i));
    const txns = proxy.requests.slice(firstRequest).filter((r) => r.url.startsWith('/_matrix/app/v1/transactions/') && r.status === 200);
    expect(txns.length).toBeGreaterThan(1);
    const gaps: number[] = [];
    for (let k = 1; k < txns.length; k++) {
      if ((txns[k - 1]!.body as { to_device: unknown[] }).to_device.length < 100) gaps.push(txns[k]!.receivedAt - txns[k - 1]!.receivedAt);
    }
    // The median, not each gap: the proxy stamps arrivals, and a busy event loop delays one
    // request's arrival and not the next.
    gaps.sort((x, y) => x - y);
    expect(gaps[Math.floor(gaps.length / 2)]).toBeGreaterThanOrEqual(LINGER_MS - 1);
    // The last acknowledged transaction is completed by the sender's next step: its rows go.
    const left = async () => ({
      queued: (await t.database.db.select().from(appserviceQueue)).length,
      pending: (await t.database.db.select().from(appservicePendingTxns)).length,
      inbox: (await t.database.db.select().from(deviceInbox)).filter((r) => r.userId === `@bridge_u1:${SERVER_NAME}`).length,
    });
    const deadline = Date.now() + 10_000;
    while (JSON.stringify(await left()) !== JSON.stringify({ queued: 0, pending: 0, inbox: 0 }) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(await left()).toEqual({ queued: 0, pending: 0, inbox: 0 });
  }, 60_000);

  it('keeps messages for an inclusive namespace in /sync as well', async () => {
    const sharedReceived: ToDeviceItem[] = [];
    const sharedAs = await startBridge(sharedReg() as unknown as IAppserviceRegistration, sharedReceived, (port) => {
      sharedPort = port;
    });
    try {
      const reg = await registerAsUser('as-shared', 'shared_x', 'SHAREDDEV');
      const shared = new TestClient(t.app, `@shared_x:${SERVER_NAME}`, 'SHAREDDEV', String(reg.body.access_token));
      await alice.sendToDevice('m.both', { [shared.userId]: { SHAREDDEV: { both: true } } });
      await until(() => sharedReceived.length > 0);
      expect(sharedReceived).toEqual([expect.objectContaining({ type: 'm.both', to_user_id: shared.userId, to_device_id: 'SHAREDDEV' })]);
      await new Promise((r) => setTimeout(r, 200));
      const s = await shared.sync();
      expect(s.to_device.events).toEqual([{ sender: alice.userId, type: 'm.both', content: { both: true } }]);
    } finally {
      sharedAs.stop();
    }
  });

  it('leaves users of an appservice without the opt-in to /sync alone', async () => {
    const reg = await registerAsUser('as-quiet', 'quiet_x', 'QUIETDEV');
    const quiet = new TestClient(t.app, `@quiet_x:${SERVER_NAME}`, 'QUIETDEV', String(reg.body.access_token));
    const before = proxy.requests.length;
    await alice.sendToDevice('m.quiet', { [quiet.userId]: { QUIETDEV: { q: 1 } } });
    const s = await quiet.sync();
    expect(s.to_device.events).toEqual([{ sender: alice.userId, type: 'm.quiet', content: { q: 1 } }]);
    await new Promise((r) => setTimeout(r, 200));
    expect(proxy.requests.slice(before).some((r) => JSON.stringify(r.body).includes('m.quiet'))).toBe(false);
  });

  it('refuses a bad as_token, a masquerade outside the namespace, an unknown device and foreign registration', async () => {
    const api = overHttp(http.baseUrl);
    const put = (token: string, query: string) =>
      api.request(`/_matrix/client/v3/sendToDevice/m.x/${Math.random()}${query}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${token}` },
        body: JSON.stringify({ messages: {} }),
      });
    const bad = await put('as-nope', '');
    expect(bad.status).toBe(401);
    expect(await bad.json()).toMatchObject({ errcode: 'M_UNKNOWN_TOKEN' });
    const outside = await put('as-bridge', `?user_id=${encodeURIComponent(alice.userId)}`);
    expect(outside.status).toBe(403);
    expect(await outside.json()).toMatchObject({ errcode: 'M_EXCLUSIVE' });
    const noDevice = await put('as-bridge', `?user_id=${encodeURIComponent(`@bridge_u1:${SERVER_NAME}`)}&device_id=NOPE`);
    expect(noDevice.status).toBe(400);
    expect(await noDevice.json()).toMatchObject({ errcode: 'M_UNKNOWN_DEVICE' });
    expect((await registerAsUser('as-bridge', 'not_in_namespace', 'X')).body.errcode).toBe('M_EXCLUSIVE');
    const squat = await t.app.request('/_matrix/client/v3/register', {
      method: 'POST',
      body: JSON.stringify({ username: 'bridge_squatter', password: 'x', auth: { type: 'm.login.dummy' } }),
    });
    expect(await squat.json()).toMatchObject({ errcode: 'M_EXCLUSIVE' });
  });

  it('keeps messages queued while the appservice refuses our hs_token', async () => {
    bridge.stop();
    await new Promise((r) => setTimeout(r, 100));
    // The appservice now expects another hs_token than the one the server sends.
    bridge = await startBridge({ ...bridgeReg(), hs_token: 'rotated' } as unknown as IAppserviceRegistration);
    const before = received.length;
    const firstRequest = proxy.requests.length;
    await alice.sendToDevice('m.refused', { [`@bridge_u1:${SERVER_NAME}`]: { BRIDGEDEV: { r: 1 } } });
    await until(() => proxy.requests.slice(firstRequest).some((r) => r.status === 401));
    expect(received.length).toBe(before);
    const rows = (await t.database.db.select().from(deviceInbox)).filter((r) => r.type === 'm.refused');
    expect(rows).toHaveLength(1);
  });
});

describe('appservice registration files', () => {
  it('reports every problem: bad fields, duplicate tokens, invalid regexes', () => {
    expect(() =>
      AppserviceRegistry.fromFiles(
        [
          { source: 'a.yaml', content: registration('a', 'http://127.0.0.1:1', '@a_.*:x') },
          { source: 'b.yaml', content: { ...registration('b', 'http://127.0.0.1:1', '@b_(.*:x'), as_token: 'as-a' } },
          { source: 'c.yaml', content: { id: 'c', url: 'not a url' } },
        ],
        SERVER_NAME,
      ),
    ).toThrow(/b\.yaml: as_token is already used by a\.yaml[\s\S]*b\.yaml: invalid namespace regex[\s\S]*c\.yaml: url/);
  });
});
