import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import ping from '../handlers/ping/index.ts';
import { runAdmin } from '../src/admin/commands.ts';
import { AppserviceRegistry } from '../src/appservice/registration.ts';
import type { HandlerModule } from '../src/sdk/define-handler.ts';
import { hashToken } from '../src/crypto/tokens.ts';
import { AccountsStore } from '../src/storage/accounts-store.ts';
import { TestClient } from './support/client.ts';
import { startFailingPeer } from './support/failing-peer.ts';
import { serveOverHttp } from './support/http-server.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';
import { createPostgresDatabaseUrl, usingPostgres } from './support/test-database.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const handlers = [{ module: ping as HandlerModule<unknown> }];
let t: TestApp;
let peer: Awaited<ReturnType<typeof startFailingPeer>>;

/** Runs one admin command in process, on the test app's database. */
async function admin(argv: string[], stdin?: string): Promise<{ code: number; out: string; err: string; json: () => Record<string, unknown> }> {
  let out = '';
  let err = '';
  const code = await runAdmin(argv, {
    config: t.services.config,
    database: t.database,
    handlers,
    out: (s) => (out += s),
    err: (s) => (err += s),
    ...(stdin === undefined ? {} : { readStdin: () => Promise.resolve(stdin) }),
  });
  return { code, out, err, json: () => JSON.parse(out) as Record<string, unknown> };
}

/**
 * The token is gone from the database; on PostgreSQL the running server also dropped it from
 * its token cache at once (NOTIFY). (On PGlite the server and the CLI never run together.)
 */
async function expectTokenGone(token: string): Promise<void> {
  expect(await new AccountsStore(t.database.db).findDeviceByTokenHash(hashToken(token))).toBeNull();
  if (!usingPostgres()) return;
  const deadline = Date.now() + 5_000;
  let status = 0;
  while (status !== 401 && Date.now() < deadline) {
    status = (await t.app.request('/_matrix/client/v3/account/whoami', { headers: { authorization: `Bearer ${token}` } })).status;
    if (status !== 401) await new Promise((r) => setTimeout(r, 20));
  }
  expect(status).toBe(401);
}

beforeAll(async () => {
  // remote.example fails every transaction and the bridge appservice is at a closed port: their
  // first send fails and the next waits a minute, so the queues command finds a transaction
  // being retried.
  peer = await startFailingPeer();
  const bridge = {
    id: 'bridge',
    url: 'http://127.0.0.1:1',
    as_token: 'as-bridge',
    hs_token: 'hs-bridge',
    sender_localpart: 'bridgebot',
    namespaces: { users: [{ exclusive: true, regex: `@bridge_.*:${SERVER_NAME}` }] },
    receive_ephemeral: true,
  };
  t = await startTestApp({ federation: { allow_http: true, static_routes: { 'remote.example': peer.baseUrl }, backoff_initial_ms: 60_000 } }, handlers, {
    appservices: AppserviceRegistry.fromFiles([{ source: 'bridge.yaml', content: bridge }], SERVER_NAME),
  });
});

afterAll(async () => {
  await t?.close();
  await peer?.close();
});

describe('admin CLI', () => {
  it('create-user: creates an account that can log in; refuses a taken or reserved name', async () => {
    const r = await admin(['create-user', 'carol', '--password', 'first pw', '--json']);
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(r.json()).toEqual({ user_id: `@carol:${SERVER_NAME}` });
    await TestClient.login(t.app, 'carol', { password: 'first pw' });

    expect((await admin(['create-user', 'carol', '--password', 'x'])).code).toBe(1);
    expect((await admin(['create-user', '', '--password', 'x'])).code).toBe(1);
    const noPassword = await admin(['create-user', 'dave']);
    expect(noPassword.code).toBe(2);
    expect(noPassword.err).toContain('--password');
    // Text output, and the password from standard input.
    const fromStdin = await admin(['create-user', 'dave', '--password-stdin'], 'stdin pw\n');
    expect(fromStdin).toMatchObject({ code: 0, out: `created @dave:${SERVER_NAME}\n` });
    await TestClient.login(t.app, 'dave', { password: 'stdin pw' });
  });

  it('reset-password: the new password works, the old one not; --logout-devices ends every session', async () => {
    const erin = await TestClient.register(t.app, 'erin', { password: 'old pw' });
    expect((await admin(['reset-password', 'erin', '--password', 'new pw'])).code).toBe(0);
    await expect(TestClient.login(t.app, 'erin', { password: 'old pw' })).rejects.toThrow(/403/);
    await TestClient.login(t.app, 'erin', { password: 'new pw' });
    expect((await erin.json('GET', '/v3/account/whoami')).status).toBe(200);

    const r = await admin(['reset-password', `@erin:${SERVER_NAME}`, '--password', 'newer pw', '--logout-devices', '--json']);
    expect(r.json()).toEqual({ user_id: `@erin:${SERVER_NAME}`, devices_deleted: 2 });
    await expectTokenGone(erin.token);
    expect((await admin(['reset-password', 'nobody', '--password', 'x'])).code).toBe(1);
    expect((await admin(['reset-password', `@:${SERVER_NAME}`, '--password', 'x'])).code).toBe(1);
  });

  it('devices and delete-device: queue depths per device; deleting drops the device, its token and its queue', async () => {
    const frank = await TestClient.register(t.app, 'frank', { deviceId: 'PHONE' });
    const frankLaptop = await TestClient.login(t.app, 'frank', { deviceId: 'LAPTOP' });
    const sender = await TestClient.register(t.app, 'sender');
    await sender.sendToDevice('m.test', { [frank.userId]: { PHONE: { n: 1 } } });
    await sender.sendToDevice('m.test', { [frank.userId]: { '*': { n: 2 } } });

    const listed = await admin(['devices', 'frank', '--json']);
    expect(listed.json()).toMatchObject({
      user_id: frank.userId,
      devices: [
        { device_id: 'LAPTOP', queued: 1 },
        { device_id: 'PHONE', queued: 2 },
      ],
    });
    const text = await admin(['devices', 'frank']);
    expect(text.out).toMatch(/PHONE\s+2/);

    const deleted = await admin(['delete-device', 'frank', 'PHONE', '--json']);
    expect(deleted.json()).toEqual({ user_id: frank.userId, device_id: 'PHONE', messages_deleted: 2 });
    await expectTokenGone(frank.token);
    expect((await frankLaptop.json('GET', '/v3/account/whoami')).status).toBe(200);
    expect((await admin(['devices', 'frank', '--json'])).json()).toMatchObject({ devices: [{ device_id: 'LAPTOP', queued: 1 }] });
    expect((await admin(['delete-device', 'frank', 'PHONE'])).code).toBe(1);
    expect((await admin(['devices', 'nobody'])).code).toBe(1);
  });

  it('handlers: modules and event types, with the dispatch counters read from the metrics listener', async () => {
    const pinger = await TestClient.register(t.app, 'pinger');
    await pinger.sendToDevice('org.example.ping', { [`@:${SERVER_NAME}`]: { '': { nonce: 'n' } } });
    await pinger.sendToDevice('org.example.ping', { [`@:${SERVER_NAME}`]: { '': { nonce: 42 } } });
    const listener = await serveOverHttp({ ...t, app: t.metricsApp });
    try {
      const r = await admin(['handlers', '--metrics-url', `${listener.baseUrl}/metrics`, '--json']);
      expect(r.json()).toEqual({
        metrics_url: `${listener.baseUrl}/metrics`,
        counters_available: true,
        modules: [{ name: 'ping', event_types: [{ type: 'org.example.ping', counts: { handled: 1, invalid_content: 1 } }] }],
      });
      expect((await admin(['handlers', '--metrics-url', `${listener.baseUrl}/metrics`])).out).toContain('org.example.ping  handled=1 invalid_content=1');
    } finally {
      await listener.close();
    }
    const down = await admin(['handlers', '--metrics-url', 'http://127.0.0.1:1/metrics', '--json']);
    expect(down.json()).toMatchObject({ counters_available: false, modules: [{ name: 'ping', event_types: [{ type: 'org.example.ping' }] }] });
  });

  it('queues: device queue totals, and per federation destination and appservice the queue and the transaction being retried', async () => {
    const sender = await TestClient.register(t.app, 'qsender');
    await sender.sendToDevice('m.test', { '@x:remote.example': { X: { a: 1 }, Y: { a: 2 } } });
    const registered = await t.app.request('/_matrix/client/v3/register', {
      method: 'POST',
      headers: { authorization: 'Bearer as-bridge' },
      body: JSON.stringify({ type: 'm.login.application_service', username: 'bridge_user', device_id: 'D' }),
    });
    expect(registered.status).toBe(200);
    await sender.sendToDevice('m.test', { [`@bridge_user:${SERVER_NAME}`]: { D: { b: 1 } } });

    type Queue = { key: string; queued: number; pending_txn: { txn_id: string; messages: number } | null; lease: unknown };
    type Queues = { device_queue_total: number; largest_device_queues: unknown[]; federation: Queue[]; appservices: Queue[] };
    // Both senders try once, fail, and keep their transaction for the retry.
    const deadline = Date.now() + 10_000;
    let q = (await admin(['queues', '--json'])).json() as Queues;
    while ((q.federation[0]?.pending_txn == null || q.appservices[0]?.pending_txn == null) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      q = (await admin(['queues', '--json'])).json() as Queues;
    }
    expect(q.device_queue_total).toBeGreaterThan(0);
    expect(q.largest_device_queues.length).toBeGreaterThan(0);
    expect(q.federation).toEqual([
      expect.objectContaining({ key: 'remote.example', queued: 2, oldest_queued_ts: expect.any(Number), pending_txn: expect.objectContaining({ txn_id: expect.any(String), messages: 2 }) }),
    ]);
    expect(q.appservices).toEqual([
      expect.objectContaining({ key: 'bridge', queued: 1, oldest_queued_ts: expect.any(Number), pending_txn: expect.objectContaining({ txn_id: expect.any(String), messages: 1 }) }),
    ]);
    const text = await admin(['queues']);
    expect(text.out).toMatch(/remote\.example\s+2\s+\d+s\s+\S+ \(2 msgs/);
    expect(text.out).toMatch(/appservices:\n.*\n\s+bridge\s+1\s+\d+s\s+\S+ \(1 msgs/);
  });

  it('answers usage errors with exit code 2', async () => {
    expect((await admin(['frobnicate'])).code).toBe(2);
    expect((await admin(['devices'])).code).toBe(2);
    expect((await admin(['devices', 'a', '--bogus'])).code).toBe(2);
    expect((await admin(['--help'])).code).toBe(0);
  });
});

describe('npm run admin (a real process)', () => {
  let dir: string;
  let pg: { url: string; drop(): Promise<void> } | null = null;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tds-admin-'));
    pg = await createPostgresDatabaseUrl();
  });
  afterAll(async () => {
    await pg?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs every command on the configured database (a fresh one, migrated on open)', () => {
    const env: NodeJS.ProcessEnv = { ...process.env, SERVER_NAME: 'cli.test', CONFIG_FILE: '', LOG_LEVEL: 'silent' };
    if (pg === null) {
      env.DATA_DIR = join(dir, 'pglite');
      delete env.DATABASE_URL;
    } else {
      env.DATABASE_URL = pg.url;
    }
    // The tsx that `npm run admin` runs, without npx resolving it anew for each run.
    const run = (...args: string[]) => spawnSync(join(ROOT, 'node_modules/.bin/tsx'), ['src/admin/cli.ts', ...args], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 });
    const created = run('create-user', 'zoe', '--password', 'pw', '--json');
    expect(created.stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('npm warn'))).toEqual([]);
    expect(created.status).toBe(0);
    expect(JSON.parse(created.stdout)).toEqual({ user_id: '@zoe:cli.test' });
    const devices = run('devices', 'zoe', '--json');
    expect(devices.status).toBe(0);
    expect(JSON.parse(devices.stdout)).toEqual({ user_id: '@zoe:cli.test', devices: [] });
    expect(run('devices', 'nobody').status).toBe(1);
    // Every other command, on the same fresh database.
    expect(run('reset-password', 'zoe', '--password', 'pw2', '--logout-devices').status).toBe(0);
    const deleted = run('delete-device', 'zoe', 'NOSUCH');
    expect(deleted.status).toBe(1);
    expect(deleted.stderr).toContain('delete-device: ');
    const listed = run('handlers', '--metrics-url', 'http://127.0.0.1:1/metrics', '--json');
    expect(listed.status).toBe(0);
    const shown = JSON.parse(listed.stdout) as { counters_available: boolean; modules: { name: string }[] };
    // No `handlers` key in this config: the modules that load by default.
    expect(shown.counters_available).toBe(false);
    expect(shown.modules.map((m) => m.name)).toEqual(['ping', 'mls', 'franking']);
    const queues = run('queues', '--json');
    expect(queues.status).toBe(0);
    expect(JSON.parse(queues.stdout)).toEqual({ device_queue_total: 0, largest_device_queues: [], federation: [], appservices: [] });
  }, 120_000);

  it('checks the command line before anything else: a typo exits 2 and opens no database', () => {
    const dataDir = join(dir, 'never-opened');
    const env: NodeJS.ProcessEnv = { ...process.env, CONFIG_FILE: '', DATABASE_URL: '', DATA_DIR: dataDir, LOG_LEVEL: 'silent' };
    const run = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'src/admin/cli.ts', ...args], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 });
    for (const [args, message] of [
      [['create-usr', 'bob', '--password', 'pw'], 'unknown command: create-usr'],
      [['create-user', 'bob'], 'create-user needs --password <pw> or --password-stdin'],
      [['create-user', 'bob', '--password', 'pw', '--password-stdin'], 'give --password or --password-stdin, not both'],
      [['delete-device', 'bob'], 'delete-device takes 2 arguments'],
      [['queues', '--bogus'], "Unknown option '--bogus'"],
      [['handlers', '--metrics-url', 'not a url'], '--metrics-url: not a URL'],
    ] as const) {
      const r = run(...args);
      expect({ args, status: r.status }).toEqual({ args, status: 2 });
      expect(r.stderr).toContain(message);
      expect(r.stderr).toContain('Usage: npm run admin');
    }
    // PGlite creates its directory on open: none means nothing was opened.
    expect(existsSync(dataDir)).toBe(false);
  }, 120_000);
});
