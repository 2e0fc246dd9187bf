import { execFileSync, execSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectToDevice, overHttp, TestClient, type ToDeviceEventJson } from './support/client.ts';
import { CryptoClient, loginDevice, matrixRequest, registerUser, sendAndReceiveEncrypted, verifyWithSas, type Credentials } from './support/crypto-client.ts';
import { MlsDevice } from '../examples/support/mls-device.ts';
import { mlsClaim, MlsMember, T as MLS } from './support/mls-member.ts';
import { freePort, ServerProcess } from './support/server-process.ts';

/**
 * Federation with a live, stock Synapse — run when one is given, skipped otherwise:
 *
 *   SYNAPSE_URL          its client API, e.g. http://127.0.0.1:8018
 *   SYNAPSE_SERVER_NAME  its server name, e.g. localhost:8448 (it must serve federation over
 *                        HTTPS on that port, and federate with localhost:<any port>)
 *   SYNAPSE_CA_FILE      the certificate its federation listener presents (self-signed is fine)
 *   SYNAPSE_START, SYNAPSE_STOP   optional shell commands; with both, the outage tests run too
 *
 * Synapse must allow open registration (m.login.dummy), loopback federation
 * (ip_range_whitelist 127.0.0.0/8), and `federation_verify_certificates: false`, since this
 * server presents a certificate made here. docs/deployment.md, "Beside an existing homeserver", says how the
 * Synapse this was run against was set up.
 */
const SYNAPSE_URL = process.env.SYNAPSE_URL ?? '';
const SYNAPSE = process.env.SYNAPSE_SERVER_NAME ?? '';
const CA_FILE = process.env.SYNAPSE_CA_FILE ?? '';
const START = process.env.SYNAPSE_START ?? '';
const STOP = process.env.SYNAPSE_STOP ?? '';
const live = SYNAPSE_URL !== '' && SYNAPSE !== '' && CA_FILE !== '';
const canRestart = live && START !== '' && STOP !== '';

/** A user on the Synapse, over its client API. */
class SynapseUser {
  private since: string | null = null;
  private constructor(
    readonly userId: string,
    readonly deviceId: string,
    private readonly token: string,
  ) {}

  static async register(localpart: string, deviceId: string): Promise<SynapseUser> {
    const body = await call('POST', '/_matrix/client/v3/register', null, { username: localpart, password: 'interop-pw', device_id: deviceId, auth: { type: 'm.login.dummy' } });
    return new SynapseUser(body.user_id as string, body.device_id as string, body.access_token as string);
  }

  static async login(localpart: string, deviceId: string): Promise<SynapseUser> {
    const body = await call('POST', '/_matrix/client/v3/login', null, { type: 'm.login.password', identifier: { type: 'm.id.user', user: localpart }, password: 'interop-pw', device_id: deviceId });
    return new SynapseUser(body.user_id as string, body.device_id as string, body.access_token as string);
  }

  /** A client-API request with this user's token (a non-200 throws). */
  async request(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
    return call(method, path, this.token, body);
  }

  async sendToDevice(type: string, messages: Record<string, Record<string, unknown>>): Promise<void> {
    await call('PUT', `/_matrix/client/v3/sendToDevice/${encodeURIComponent(type)}/${randomBytes(8).toString('hex')}`, this.token, { messages });
  }

  /** Syncs until `count` to-device events arrived (or the time is up); each sync acknowledges the last. */
  async collect(count: number, timeoutMs = 60_000): Promise<ToDeviceEventJson[]> {
    const events: ToDeviceEventJson[] = [];
    const deadline = Date.now() + timeoutMs;
    do {
      const query = new URLSearchParams({ timeout: this.since === null ? '0' : String(Math.min(5_000, Math.max(0, deadline - Date.now()))) });
      if (this.since !== null) query.set('since', this.since);
      const body = await call('GET', `/_matrix/client/v3/sync?${query}`, this.token);
      this.since = body.next_batch as string;
      events.push(...(((body.to_device as { events?: ToDeviceEventJson[] } | undefined)?.events) ?? []));
    } while (events.length < count && Date.now() < deadline);
    return events;
  }
}

async function call(method: string, path: string, token: string | null, body?: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(`${SYNAPSE_URL}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token === null ? {} : { authorization: `Bearer ${token}` }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const json = (await res.json()) as Record<string, unknown>;
  if (res.status !== 200) throw new Error(`Synapse ${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

async function synapseUp(timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      if ((await fetch(`${SYNAPSE_URL}/_matrix/client/versions`)).ok) return;
    } catch {
      // Not yet.
    }
    if (Date.now() > until) throw new Error('Synapse did not come up');
    await new Promise((r) => setTimeout(r, 250));
  }
}

const dir = mkdtempSync(join(tmpdir(), 'tds-synapse-'));
let ours: ServerProcess;
let oursName = '';
const run = randomBytes(3).toString('hex');
const name = (s: string) => `${s}_${run}`;

beforeAll(async () => {
  if (!live) return;
  await synapseUp();
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ], { stdio: 'ignore' });
  const [clientPort, fedPort] = await Promise.all([freePort(), freePort()]);
  // Synapse dials `localhost:<port>` over HTTPS on exactly that port.
  oursName = `localhost:${fedPort}`;
  ours = await ServerProcess.create(oursName, clientPort, {
    federation: {
      listen: { host: '127.0.0.1', port: fedPort, tls_cert: join(dir, 'cert.pem'), tls_key: join(dir, 'key.pem') },
      ca_file: CA_FILE,
      backoff_initial_ms: 200,
      backoff_max_ms: 2_000,
    },
  });
  await ours.start();
}, 120_000);

afterAll(async () => {
  if (canRestart) await synapseUp().catch(() => execSync(START, { stdio: 'ignore' }));
  await ours?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

const onOurs = () => overHttp(ours.baseUrl);

describe.skipIf(!live)(`federation with a live Synapse (${SYNAPSE || 'SYNAPSE_URL not set'})`, () => {
  it('ours → Synapse: to one device and to *', async () => {
    const alice = await TestClient.register(onOurs(), 'alice');
    const s1 = await SynapseUser.register(name('s1'), 'S1A');
    const s1b = await SynapseUser.login(name('s1'), 'S1B');
    await Promise.all([s1.collect(0), s1b.collect(0)]);
    expect((await alice.sendToDevice('org.example.interop', { [s1.userId]: { S1A: { to: 'one' } } })).status).toBe(200);
    expect((await alice.sendToDevice('org.example.interop', { [s1.userId]: { '*': { to: 'all' } } })).status).toBe(200);
    const gotA = await s1.collect(2);
    const gotB = await s1b.collect(1);
    expect(gotA).toEqual([
      { sender: alice.userId, type: 'org.example.interop', content: { to: 'one' } },
      { sender: alice.userId, type: 'org.example.interop', content: { to: 'all' } },
    ]);
    expect(gotB).toEqual([{ sender: alice.userId, type: 'org.example.interop', content: { to: 'all' } }]);
  }, 120_000);

  it('Synapse → ours: to one device and to *', async () => {
    const bob1 = await TestClient.register(onOurs(), 'bob', { deviceId: 'BOB1' });
    const bob2 = await TestClient.login(onOurs(), 'bob', { deviceId: 'BOB2' });
    const s2 = await SynapseUser.register(name('s2'), 'S2A');
    await s2.sendToDevice('org.example.interop', { [bob1.userId]: { BOB1: { to: 'one' } } });
    await s2.sendToDevice('org.example.interop', { [bob1.userId]: { '*': { to: 'all' } } });
    expect(await collectToDevice(bob1, 2, 60_000)).toEqual([
      { sender: s2.userId, type: 'org.example.interop', content: { to: 'one' } },
      { sender: s2.userId, type: 'org.example.interop', content: { to: 'all' } },
    ]);
    expect(await collectToDevice(bob2, 1, 60_000)).toEqual([{ sender: s2.userId, type: 'org.example.interop', content: { to: 'all' } }]);
  }, 120_000);

  it('a Synapse user pings @:ours and the pong comes back: to the device named in device_id, else to all its devices', async () => {
    const s3 = await SynapseUser.register(name('s3'), 'S3A');
    const s3b = await SynapseUser.login(name('s3'), 'S3B');
    await Promise.all([s3.collect(0), s3b.collect(0)]);
    await s3.sendToDevice('org.example.ping', { [`@:${oursName}`]: { '': { nonce: 'named', device_id: 'S3A' } } });
    const pong = await s3.collect(1);
    expect(pong).toEqual([{ sender: `@:${oursName}`, type: 'org.example.pong', content: { nonce: 'named', server_ts: expect.any(Number) } }]);
    await s3.sendToDevice('org.example.ping', { [`@:${oursName}`]: { '*': { nonce: 'unnamed' } } });
    expect((await s3.collect(1)).map((e) => e.content.nonce)).toEqual(['unnamed']);
    // S3B got only the one that named no device.
    expect((await s3b.collect(1)).map((e) => e.content.nonce)).toEqual(['unnamed']);
  }, 120_000);

  it('40 messages to one Synapse device arrive once each, in order', async () => {
    const carol = await TestClient.register(onOurs(), 'carol');
    const s4 = await SynapseUser.register(name('s4'), 'S4A');
    await s4.collect(0);
    for (let i = 0; i < 40; i++) expect((await carol.sendToDevice('org.example.seq', { [s4.userId]: { S4A: { i } } })).status).toBe(200);
    const got = await s4.collect(40, 120_000);
    expect(got.map((e) => e.content.i)).toEqual(Array.from({ length: 40 }, (_, i) => i));
  }, 180_000);

  it.skipIf(!canRestart)('Synapse down, then up: what was queued meanwhile arrives once each, in order', async () => {
    const dan = await TestClient.register(onOurs(), 'dan');
    const s5 = await SynapseUser.register(name('s5'), 'S5A');
    await s5.collect(0);
    execSync(STOP, { stdio: 'ignore' });
    for (let i = 0; i < 30; i++) expect((await dan.sendToDevice('org.example.seq', { [s5.userId]: { S5A: { i } } })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1_000));
    execSync(START, { stdio: 'ignore' });
    await synapseUp();
    const got = await s5.collect(30, 120_000);
    expect(got.map((e) => e.content.i)).toEqual(Array.from({ length: 30 }, (_, i) => i));
  }, 240_000);

  it.skipIf(!canRestart)('ours down, then up: Synapse delivers what it queued once it hears from us', async () => {
    const erin = await TestClient.register(onOurs(), 'erin');
    const s6 = await SynapseUser.register(name('s6'), 'S6A');
    await s6.collect(0);
    await ours.stop('SIGKILL');
    for (let i = 0; i < 5; i++) await s6.sendToDevice('org.example.seq', { [erin.userId]: { [erin.deviceId]: { i } } });
    await new Promise((r) => setTimeout(r, 2_000));
    await ours.start();
    // Synapse backs off for ≥ 10 minutes from a server it failed to reach; a signed request from
    // that server (any transaction) tells it the server is back.
    expect((await erin.sendToDevice('org.example.hello', { [s6.userId]: { S6A: { back: true } } })).status).toBe(200);
    expect((await s6.collect(1)).map((e) => e.content)).toEqual([{ back: true }]);
    const got = await collectToDevice(erin, 5, 120_000);
    expect(got.map((e) => e.content.i)).toEqual([0, 1, 2, 3, 4]);
  }, 240_000);
});

/**
 * End-to-end encryption with the same Synapse: matrix-js-sdk 43 Rust-crypto clients, one user on
 * each server. Keys are queried and claimed across servers both ways (Synapse asks our
 * /user/keys/query and /user/keys/claim; we ask its), Olm-encrypted to-device messages flow both
 * ways, each side verifies the other's device with SAS, and a new device of the Synapse user is
 * in our user's /keys/query (Synapse sends no m.device_list_update without a shared room, so our
 * server asks it again on each query).
 */
describe.skipIf(!live)(`end-to-end encryption with a live Synapse (${SYNAPSE || 'SYNAPSE_URL not set'})`, () => {
  const running: CryptoClient[] = [];
  afterAll(() => {
    for (const c of running.splice(0)) c.stop();
  });
  const start = async (baseUrl: string, creds: Credentials) => {
    const c = await CryptoClient.start(baseUrl, creds);
    running.push(c);
    return c;
  };

  it('keys both ways, Olm both ways, SAS each way, and the Synapse user\'s new device seen here', async () => {
    const t0 = Date.now();
    const times: Record<string, number> = {};
    const mark = (what: string) => (times[what] = Date.now() - t0);
    const oursCreds = await registerUser(ours.baseUrl, name('e2ee_ours'));
    const theirsCreds = await registerUser(SYNAPSE_URL, name('e2ee_syn'));
    const mine = await start(ours.baseUrl, oursCreds);
    const theirs = await start(SYNAPSE_URL, theirsCreds);
    await mine.trackUsers([theirs.userId], { [theirs.userId]: [theirs.deviceId] });
    await theirs.trackUsers([mine.userId], { [mine.userId]: [mine.deviceId] });
    mark('keys queried both ways');
    await sendAndReceiveEncrypted(mine, theirs, 'ours to Synapse');
    await sendAndReceiveEncrypted(theirs, mine, 'Synapse to ours');
    mark('Olm both ways');
    const first = await verifyWithSas(mine, theirs);
    expect(first.initiator.sas.sas.emoji).toEqual(first.responder.sas.sas.emoji);
    mark('SAS, ours verifying Synapse');
    expect((await mine.crypto.getDeviceVerificationStatus(theirs.userId, theirs.deviceId))?.localVerified).toBe(true);
    expect((await theirs.crypto.getDeviceVerificationStatus(mine.userId, mine.deviceId))?.localVerified).toBe(true);
    // The other direction on a fresh pair of devices: a second verification started from the
    // former responder between the same two devices is cancelled by the Rust crypto itself (m.user,
    // seen between two of our servers too), so it is not a server matter.
    const mineB = await start(ours.baseUrl, await loginDevice(ours.baseUrl, oursCreds));
    const theirsB = await start(SYNAPSE_URL, await loginDevice(SYNAPSE_URL, theirsCreds));
    await theirsB.trackUsers([mine.userId], { [mine.userId]: [mineB.deviceId] });
    await mineB.trackUsers([theirs.userId], { [theirs.userId]: [theirsB.deviceId] });
    const second = await verifyWithSas(theirsB, mineB);
    expect(second.initiator.sas.sas.emoji).toEqual(second.responder.sas.sas.emoji);
    expect((await theirsB.crypto.getDeviceVerificationStatus(mine.userId, mineB.deviceId))?.localVerified).toBe(true);
    mark('SAS, Synapse verifying ours');

    const second2 = await loginDevice(SYNAPSE_URL, theirsCreds);
    const deadline = Date.now() + 30_000;
    let seen: string[] = [];
    while (Date.now() < deadline) {
      const q = await matrixRequest<{ device_keys: Record<string, Record<string, unknown>> }>(ours.baseUrl, 'POST', '/_matrix/client/v3/keys/query', oursCreds.accessToken, { device_keys: { [theirs.userId]: [] } });
      seen = Object.keys(q.body.device_keys[theirs.userId] ?? {});
      if (seen.includes(second2.deviceId)) break;
      // The new device has no keys until its client uploads them: start it.
      if (running.every((c) => c.deviceId !== second2.deviceId)) await start(SYNAPSE_URL, second2);
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(seen).toContain(second2.deviceId);
    mark('new Synapse device in our /keys/query');
    console.warn(`E2EE with Synapse: ${JSON.stringify(times)} ms from the start`);
  }, 180_000);
});

/** What arrives in a member's inbox, until `count` events or 60 s (its inbox acknowledges as it reads). */
async function takeUntil(m: MlsMember, count: number): Promise<ToDeviceEventJson[]> {
  const events: ToDeviceEventJson[] = [];
  for (const deadline = Date.now() + 60_000; events.length < count && Date.now() < deadline; ) {
    events.push(...(await m.inbox.take()));
    if (events.length < count) await new Promise((r) => setTimeout(r, 100));
  }
  return events;
}

describe.skipIf(!live)(`MSC4244 MLS with a live Synapse (${SYNAPSE || 'SYNAPSE_URL not set'})`, () => {
  it('a Synapse client\'s KeyPackages on Synapse, claimed over federation; a group through @:ours with commits both ways', async () => {
    const t0 = Date.now();
    const step = (what: string) => console.warn(`synapse mls: ${what} after ${Date.now() - t0} ms`);
    // The Synapse user uploads KeyPackages to its own server (a stock Synapse stores any algorithm).
    const sam = await SynapseUser.register(name('mls'), 'SAMMLS');
    await sam.collect(0);
    const samMls = await MlsDevice.create(sam.userId, sam.deviceId);
    const uploaded = await sam.request('POST', '/_matrix/client/v3/keys/upload', { one_time_keys: await samMls.mlsKeys(2) });
    expect(uploaded.one_time_key_counts).toMatchObject({ mls: 2 });

    // Our client claims one through our server, which asks Synapse's /user/keys/claim (with the mls object, which it ignores).
    const alice = await MlsMember.of(await TestClient.register(onOurs(), 'mlsalice'), { serverUser: `@:${oursName}` });
    const claimed = await alice.claim(sam.userId, [sam.deviceId], mlsClaim());
    const samPackage = claimed[sam.deviceId]?.keyPackage;
    expect(samPackage).toBeDefined();
    expect((await sam.request('POST', '/_matrix/client/v3/keys/upload', {})).one_time_key_counts).toMatchObject({ mls: 1 });
    step('claimed over federation');

    // A group through @:ours adding the Synapse device: the Welcome reaches it through Synapse.
    await alice.mls.createGroup(randomBytes(16));
    const created = await alice.mls.commit([samPackage ?? '']);
    const ref = { user_id: sam.userId, device_id: sam.deviceId };
    expect(await alice.ask(MLS.message, { message: created.message, commit_info: { welcome: created.welcome, added: [ref] } })).toMatchObject([
      { type: MLS.commit, content: { epoch: 1, sender: alice.ref } },
    ]);
    alice.mls.apply(created);
    const [welcome] = await sam.collect(1);
    expect(welcome).toMatchObject({ sender: `@:${oursName}`, type: MLS.welcome, content: { epoch: 1, welcome: created.welcome } });
    await samMls.join(String(welcome?.content.welcome));
    expect(samMls.epoch).toBe(1);
    step('Welcome received on Synapse');

    // The Synapse client commits through @:ours over federation (naming its device, which federation does not carry).
    const samCommit = await samMls.commit();
    await sam.sendToDevice(MLS.message, { [`@:${oursName}`]: { '': { message: samCommit.message, device_id: sam.deviceId, request_id: 'sam-1' } } });
    const [own] = await sam.collect(1);
    expect(own).toMatchObject({ type: MLS.commit, content: { epoch: 2, request_id: 'sam-1', sender: ref } });
    samMls.apply(samCommit);
    const toAlice = await takeUntil(alice, 1);
    expect(toAlice).toMatchObject([{ type: MLS.commit, content: { epoch: 2, sender: ref } }]);
    await alice.mls.receive(String(toAlice[0]?.content.message));
    step('Synapse client commit accepted and fanned out');

    // And back: our client commits, the Synapse client follows; application messages both ways.
    const aliceCommit = await alice.mls.commit();
    expect(await alice.ask(MLS.message, { message: aliceCommit.message })).toMatchObject([{ type: MLS.commit, content: { epoch: 3 } }]);
    alice.mls.apply(aliceCommit);
    const [toSam] = await sam.collect(1);
    expect(toSam).toMatchObject({ type: MLS.commit, content: { epoch: 3, sender: alice.ref } });
    await samMls.receive(String(toSam?.content.message));
    await alice.send(MLS.message, { message: await alice.mls.encrypt('hello Synapse') });
    const [relayed] = await sam.collect(1);
    expect(await samMls.receive(String(relayed?.content.message))).toBe('hello Synapse');
    await sam.sendToDevice(MLS.message, { [`@:${oursName}`]: { '': { message: await samMls.encrypt('hello ours'), device_id: sam.deviceId } } });
    const back = await takeUntil(alice, 1);
    expect(await alice.mls.receive(String(back[0]?.content.message))).toBe('hello ours');
    expect([alice.mls.epoch, samMls.epoch]).toEqual([3, 3]);
    step('done');
  }, 180_000);
});
