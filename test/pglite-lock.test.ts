import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataDirLockedError, LOCK_FILE } from '../src/storage/drivers/data-dir-lock.ts';
import { openDatabase } from '../src/storage/drivers/database.ts';
import { overHttp, TestClient } from './support/client.ts';
import { freePort, ServerProcess } from './support/server-process.ts';

/**
 * One PGlite data directory, one process: a second server or the admin CLI on a directory a
 * server holds fails at once, naming the holder, and nothing is lost; a lock left by a killed
 * process does not block a restart. (PGlite only: the directory is given explicitly, so this
 * also runs under TEST_DATABASE_URL.)
 */
const ROOT = new URL('..', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'tds-lock-'));
const dataDir = join(dir, 'pglite');
let first: ServerProcess;
let second: ServerProcess;
let metricsPort: number;

beforeAll(async () => {
  metricsPort = await freePort();
  first = await ServerProcess.create('lock.test', await freePort(), { database: { data_dir: dataDir }, metrics: { port: metricsPort } });
  second = await ServerProcess.create('lock.test', await freePort(), { database: { data_dir: dataDir }, metrics: { enabled: false } });
  await first.start();
}, 90_000);
afterAll(async () => {
  await second?.destroy();
  await first?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

function admin(...args: string[]) {
  const configFile = join(dir, 'admin.yaml');
  writeFileSync(configFile, stringify({ server_name: 'lock.test', database: { data_dir: dataDir }, metrics: { port: metricsPort } }));
  return spawnSync(process.execPath, ['--import', 'tsx', 'src/admin/cli.ts', ...args], {
    cwd: ROOT,
    env: { ...process.env, CONFIG_FILE: configFile, DATABASE_URL: '' },
    encoding: 'utf8',
    timeout: 60_000,
  });
}

async function canLogIn(server: ServerProcess, user: string): Promise<boolean> {
  return TestClient.login(overHttp(server.baseUrl), user).then(
    () => true,
    () => false,
  );
}

describe('PGlite directory lock', () => {
  it('refuses a second server and the admin CLI at once, naming the holder; nothing is lost', async () => {
    await TestClient.register(overHttp(first.baseUrl), 'alice');
    const pid = JSON.parse(readFileSync(join(dataDir, LOCK_FILE), 'utf8')) as { pid: number };

    const started = Date.now();
    const err = await second.start().then(() => null, (e: unknown) => String(e));
    expect(err).toContain(`is in use by pid ${pid.pid}`);
    expect(Date.now() - started).toBeLessThan(30_000);

    const cli = admin('create-user', 'bob', '--password', 'secret');
    expect(cli.status).toBe(1);
    expect(cli.stderr).toContain('nothing was done');
    expect(cli.stderr).toContain(`pid ${pid.pid}`);
    expect(cli.stderr).toContain("npm run admin -- create-user bob --password '…'");
    expect(cli.stderr).not.toContain('secret');

    // The running server's data is intact, and it never got a user it was not told about.
    expect(await canLogIn(first, 'alice')).toBe(true);
    expect(await canLogIn(first, 'bob')).toBe(false);
    // A second open inside one process is refused too.
    await expect(openDatabase({ kind: 'pglite', dataDir })).rejects.toBeInstanceOf(DataDirLockedError);
  }, 120_000);

  it('answers a typo with its usage (exit 2), not with the lock; `handlers` shows the running server\'s live counters', async () => {
    const typo = admin('create-usr', 'bob', '--password', 'secret');
    expect(typo.status).toBe(2);
    expect(typo.stderr).toContain('unknown command: create-usr');
    expect(typo.stderr).not.toContain('nothing was done');

    const sender = await TestClient.register(overHttp(first.baseUrl), 'pinger');
    expect((await sender.sendToDevice('org.example.ping', { '@:lock.test': { '': { nonce: 'n' } } })).status).toBe(200);
    const live = admin('handlers', '--json');
    expect({ status: live.status, stderr: live.stderr }).toEqual({ status: 0, stderr: '' });
    const shown = JSON.parse(live.stdout) as { counters_available: boolean; modules: { name: string; event_types: { type: string; counts?: Record<string, number> }[] }[] };
    expect(shown.counters_available).toBe(true);
    const ping = shown.modules.find((m) => m.name === 'ping')?.event_types.find((t) => t.type === 'org.example.ping');
    expect(ping?.counts).toEqual({ handled: 1 });
    // The server still holds its directory and serves.
    expect(JSON.parse(readFileSync(join(dataDir, LOCK_FILE), 'utf8'))).toMatchObject({ pid: expect.any(Number) });
    expect(await canLogIn(first, 'alice')).toBe(true);
  }, 120_000);

  it('takes over the stale lock of a killed server, and the CLI works once the server is stopped', async () => {
    expect(await first.stop('SIGKILL')).toBe(null);
    expect(existsSync(join(dataDir, LOCK_FILE))).toBe(true);
    const restarted = Date.now();
    await first.start();
    expect(Date.now() - restarted).toBeLessThan(30_000);
    expect(await canLogIn(first, 'alice')).toBe(true);

    expect(await first.stop('SIGTERM')).toBe(0);
    expect(existsSync(join(dataDir, LOCK_FILE))).toBe(false);
    const cli = admin('create-user', 'bob', '--password', 'secret');
    expect({ status: cli.status, stderr: cli.stderr }).toMatchObject({ status: 0 });
    await first.start();
    expect(await canLogIn(first, 'bob')).toBe(false); // wrong password: TestClient uses 'correct horse'
    expect(await TestClient.login(overHttp(first.baseUrl), 'bob', { password: 'secret' }).then((c) => c.userId)).toBe('@bob:lock.test');
  }, 120_000);
});
