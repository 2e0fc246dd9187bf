import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CryptoClient, loginDevice, registerUser, sendAndReceiveEncrypted, verifyWithSas, type Credentials } from './support/crypto-client.ts';
import { freePort, ServerProcess } from './support/server-process.ts';

/**
 * Real matrix-js-sdk 43 clients with the Rust crypto, one user on each of two of our server
 * processes federating over HTTP (a.test and b.test, each with its own database): keys queried and claimed across servers, Olm both
 * ways, SAS verification across servers, and a new device on one server seen on the other
 * through an m.device_list_update EDU. Nothing is mocked.
 */
// Generous: on a loaded 2-core machine (the whole suite on two workers) each client's WebAssembly
// crypto competes with the servers; each step below still fails on its own, named, well before.
const TEST_TIMEOUT_MS = 240_000;
const STEP_TIMEOUT_MS = 60_000;

/**
 * One awaited step of the scenario, named in the failure if it does not finish in time. A failed
 * step also carries both servers' request log since it began: with the clients' own wire logs
 * (see verifyWithSas) it shows whether a to-device send, a federation transaction or a /sync
 * long-poll was late on the server's side.
 */
async function step<T>(name: string, work: Promise<T>): Promise<T> {
  const began = new Date().toISOString();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`step "${name}" did not finish within ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS)));
  try {
    return await Promise.race([work, late]);
  } catch (e) {
    if (e instanceof Error) e.message += `\n${serverLog(a, began)}\n${serverLog(b, began)}`;
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** A server's log lines from `since` (ISO time) on, requests shortened to one line each. */
function serverLog(server: ServerProcess | undefined, since: string): string {
  if (server === undefined) return '';
  const lines = server.stderr.split('\n').flatMap((line) => {
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return line.trim() === '' ? [] : [line];
    }
    const time = typeof entry.time === 'string' ? entry.time : '';
    if (time < since) return [];
    const { time: _t, level, msg, method, path, status, durationMs, userId, deviceId, requestId: _r, ...rest } = entry;
    const who = typeof userId === 'string' ? ` ${userId}/${String(deviceId ?? '-')}` : '';
    const what = msg === 'request' ? `${String(method)} ${String(path)} ${String(status)} in ${String(durationMs)} ms${who}` : `${String(level)} ${String(msg)} ${JSON.stringify(rest)}`;
    return [`${time.slice(11, 23)} ${what}`];
  });
  return `${server.serverName} log since ${since.slice(11, 23)}:\n  ${lines.slice(-150).join('\n  ')}`;
}
let a: ServerProcess;
let b: ServerProcess;
let aUrl = '';
let bUrl = '';

beforeAll(async () => {
  const [pa, pb] = await Promise.all([freePort(), freePort()]);
  const fed = (routes: Record<string, string>) => ({ federation: { allow_http: true, static_routes: routes, backoff_initial_ms: 50, backoff_max_ms: 200 }, metrics: { enabled: false } });
  a = await ServerProcess.create('a.test', pa, fed({ 'b.test': `http://127.0.0.1:${pb}` }));
  b = await ServerProcess.create('b.test', pb, fed({ 'a.test': `http://127.0.0.1:${pa}` }));
  await Promise.all([a.start(), b.start()]);
  aUrl = a.baseUrl;
  bUrl = b.baseUrl;
}, 120_000);
afterAll(async () => {
  await Promise.all([a?.destroy(), b?.destroy()]);
});

const running: CryptoClient[] = [];
afterEach(() => {
  for (const c of running.splice(0)) c.stop();
});
async function start(baseUrl: string, creds: Credentials): Promise<CryptoClient> {
  const c = await CryptoClient.start(baseUrl, creds);
  running.push(c);
  return c;
}

describe('matrix-js-sdk 43 with the Rust crypto, across two of our servers', () => {
  it('exchange Olm-encrypted messages both ways, verify each other with SAS, and see a new device appear', async () => {
    const aliceCreds = await step('register alice', registerUser(aUrl, 'alice'));
    const bobCreds = await step('register bob', registerUser(bUrl, 'bob'));
    const alice = await step('start alice', start(aUrl, aliceCreds));
    const bob = await step('start bob', start(bUrl, bobCreds));
    // No room in common: each crypto is told to track the other user (see e2ee-js-sdk.test.ts);
    // its /keys/query goes to its own server, which asks the other one over federation.
    await step('alice tracks bob', alice.trackUsers([bob.userId], { [bob.userId]: [bob.deviceId] }));
    await step('bob tracks alice', bob.trackUsers([alice.userId], { [alice.userId]: [alice.deviceId] }));

    // The first message of each side claims a one-time key across servers.
    await step('Olm a.test to b.test', sendAndReceiveEncrypted(alice, bob, 'a.test to b.test'));
    await step('Olm b.test to a.test', sendAndReceiveEncrypted(bob, alice, 'b.test to a.test'));

    const sides = await step('SAS', verifyWithSas(alice, bob));
    expect(sides.initiator.sas.sas.emoji).toEqual(sides.responder.sas.sas.emoji);
    expect((await alice.crypto.getDeviceVerificationStatus(bob.userId, bob.deviceId))?.localVerified).toBe(true);
    expect((await bob.crypto.getDeviceVerificationStatus(alice.userId, alice.deviceId))?.localVerified).toBe(true);

    // Bob logs in a second device on b.test: b.test tells a.test (m.device_list_update), a.test
    // tells alice (device_lists.changed), her crypto re-queries and can encrypt to it.
    const bob2 = await step('start bob2', start(bUrl, await loginDevice(bUrl, bobCreds)));
    await step('alice sees bob2', alice.waitForDevices({ [bob.userId]: [bob.deviceId, bob2.deviceId] }));
    await step('Olm to bob2', sendAndReceiveEncrypted(alice, bob2, 'to the new device on b.test'));
  }, TEST_TIMEOUT_MS);
});
