import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canonicalJson } from '../src/shared/canonical-json.ts';
import { collectToDevice, overHttp, TestClient } from './support/client.ts';
import { startRecordingProxy } from './support/recording-proxy.ts';
import { freePort, ServerProcess } from './support/server-process.ts';

/**
 * Two real server processes on loopback, a.test and b.test, each with its own database.
 * A reaches B through a recording proxy, so the test can look at the transactions A sends.
 */
let a: ServerProcess;
let b: ServerProcess;
let proxy: Awaited<ReturnType<typeof startRecordingProxy>>;

type Txn = { edus: { edu_type: string; content: Record<string, unknown> }[] };
/** Transactions A sent to B, by txn id (a retry repeats the same one). */
const sent = () =>
  new Map(
    proxy.requests
      .filter((r) => r.method === 'PUT' && r.url.startsWith('/_matrix/federation/v1/send/'))
      .map((r) => [r.url, r.body as Txn] as const),
  );

beforeAll(async () => {
  const [pa, pb] = await Promise.all([freePort(), freePort()]);
  proxy = await startRecordingProxy(`http://127.0.0.1:${pb}`);
  const fed = (routes: Record<string, string>) => ({
    federation: { allow_http: true, static_routes: routes, backoff_initial_ms: 100, backoff_max_ms: 400 },
  });
  a = await ServerProcess.create('a.test', pa, fed({ 'b.test': proxy.baseUrl }));
  b = await ServerProcess.create('b.test', pb, fed({ 'a.test': `http://127.0.0.1:${pa}` }));
  await Promise.all([a.start(), b.start()]);
}, 120_000);

afterAll(async () => {
  await Promise.all([a?.destroy(), b?.destroy()]);
  await proxy.close();
});

const onA = () => overHttp(a.baseUrl);
const onB = () => overHttp(b.baseUrl);

describe('federation between two server processes', () => {
  it('delivers from a user on A to a user on B, to one device and to *, each once, with ack semantics', async () => {
    const alice = await TestClient.register(onA(), 'alice');
    const bob1 = await TestClient.register(onB(), 'bob', { deviceId: 'BOB1' });
    const bob2 = await TestClient.login(onB(), 'bob', { deviceId: 'BOB2' });
    expect((await alice.sendToDevice('m.fed', { '@bob:b.test': { BOB1: { to: 'one' } } })).status).toBe(200);
    expect((await alice.sendToDevice('m.fed', { '@bob:b.test': { '*': { to: 'all' } } })).status).toBe(200);
    const got1 = await collectToDevice(bob1, 2);
    const got2 = await collectToDevice(bob2, 1);
    expect(got1).toEqual([
      { sender: '@alice:a.test', type: 'm.fed', content: { to: 'one' } },
      { sender: '@alice:a.test', type: 'm.fed', content: { to: 'all' } },
    ]);
    expect(got2).toEqual([{ sender: '@alice:a.test', type: 'm.fed', content: { to: 'all' } }]);
    // Acknowledged: nothing comes again.
    expect((await bob1.sync()).to_device.events).toEqual([]);
  });

  it('lets a user on A ping @:b.test and receive the pong over federation', async () => {
    const carol = await TestClient.register(onA(), 'carol');
    await carol.sendToDevice('org.example.ping', { '@:b.test': { '': { nonce: 'across' } } });
    const got = await collectToDevice(carol, 1);
    expect(got).toEqual([{ sender: '@:b.test', type: 'org.example.pong', content: { nonce: 'across', server_ts: expect.any(Number) } }]);
  });

  it('answers a federated ping to the one device it names in device_id (the EDU does not say which device sent it), else to all', async () => {
    const c1 = await TestClient.register(onA(), 'cleo', { deviceId: 'C1' });
    const c2 = await TestClient.login(onA(), 'cleo', { deviceId: 'C2' });
    await c1.sendToDevice('org.example.ping', { '@:b.test': { '': { nonce: 'named', device_id: 'C2' } } });
    expect((await collectToDevice(c2, 1)).map((e) => e.content.nonce)).toEqual(['named']);
    await c1.sendToDevice('org.example.ping', { '@:b.test': { '*': { nonce: 'unnamed' } } });
    expect((await collectToDevice(c2, 1)).map((e) => e.content.nonce)).toEqual(['unnamed']);
    // C1 got only the unnamed one.
    expect((await collectToDevice(c1, 1)).map((e) => e.content.nonce)).toEqual(['unnamed']);
    expect((await c1.sync()).to_device.events).toEqual([]);
  });

  it('packs 300 messages of 1 KiB to one remote user into EDUs of at most 64 KiB', async () => {
    const sender = await TestClient.register(onA(), 'bulk');
    // 100 devices × 3 rounds = 300 messages.
    const devices = Array.from({ length: 100 }, (_, i) => `D${i}`);
    await TestClient.register(onB(), 'dave', { deviceId: 'D0' });
    for (let i = 1; i < devices.length; i += 10) {
      await Promise.all(devices.slice(i, i + 10).map((deviceId) => TestClient.login(onB(), 'dave', { deviceId })));
    }
    const dave0 = await TestClient.login(onB(), 'dave', { deviceId: 'D0' });
    const dave99 = await TestClient.login(onB(), 'dave', { deviceId: 'D99' });
    const before = new Set(sent().keys());
    for (let round = 0; round < 3; round++) {
      const perDevice = Object.fromEntries(devices.map((d) => [d, { round, pad: 'x'.repeat(1000) }]));
      expect((await sender.sendToDevice('m.bulk', { '@dave:b.test': perDevice })).status).toBe(200);
    }
    expect((await collectToDevice(dave0, 3)).map((e) => e.content.round)).toEqual([0, 1, 2]);
    expect((await collectToDevice(dave99, 3)).map((e) => e.content.round)).toEqual([0, 1, 2]);
    const edus = [...sent()].filter(([id]) => !before.has(id)).flatMap(([, t]) => t.edus).filter((e) => e.content.type === 'm.bulk');
    const carried = edus.reduce((n, e) => n + Object.keys((e.content.messages as Record<string, object>)['@dave:b.test'] ?? {}).length, 0);
    expect(carried).toBe(300);
    for (const e of edus) expect(Buffer.byteLength(canonicalJson(e.content))).toBeLessThanOrEqual(65_536);
    expect(edus.length).toBeLessThanOrEqual(8);
  }, 60_000);

  it('delivers what was sent while B was down once B is back (interrupted connectivity)', async () => {
    const erin = await TestClient.register(onA(), 'erin');
    const frank = await TestClient.register(onB(), 'frank');
    await b.stop('SIGKILL');
    for (let i = 0; i < 5; i++) expect((await erin.sendToDevice('m.down', { '@frank:b.test': { [frank.deviceId]: { i } } })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 500));
    await b.start();
    const got = await collectToDevice(frank, 5);
    expect(got.map((e) => e.content.i)).toEqual([0, 1, 2, 3, 4]);
  }, 90_000);

  it('delivers what A queued before a restart, while B was down (stopped server)', async () => {
    const gina = await TestClient.register(onA(), 'gina');
    const hank = await TestClient.register(onB(), 'hank');
    await b.stop('SIGKILL');
    for (let i = 0; i < 3; i++) expect((await gina.sendToDevice('m.restart', { '@hank:b.test': { [hank.deviceId]: { i } } })).status).toBe(200);
    await a.stop('SIGTERM');
    await a.start();
    await b.start();
    const got = await collectToDevice(hank, 3);
    expect(got.map((e) => e.content.i)).toEqual([0, 1, 2]);
  }, 90_000);
});
