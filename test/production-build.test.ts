import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, ServerProcess } from './support/server-process.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const EXAMPLE = join(ROOT, 'examples', 'external-module');

// `npm run build` then `npm run start:prod`: the server, its migrations and the default handler
// modules as plain JavaScript, with no TypeScript loader at run time — and a handler module from
// a package of its own (examples/external-module, built to JavaScript), installed by npm name.
describe('production build', () => {
  let server: ServerProcess;
  const deployment = mkdtempSync(join(tmpdir(), 'tds-built-deploy-'));

  beforeAll(async () => {
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'ignore', timeout: 120_000 });
    // CI installs the example first (.ci/run); a checkout that has not gets it installed here.
    if (!existsSync(join(EXAMPLE, 'node_modules', 'matrix-to-device-server', 'dist'))) {
      execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--prefer-offline'], { cwd: EXAMPLE, stdio: 'ignore', timeout: 180_000 });
    }
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: EXAMPLE, stdio: 'ignore', timeout: 120_000 });
    mkdirSync(join(deployment, 'node_modules'));
    symlinkSync(EXAMPLE, join(deployment, 'node_modules', 'matrix-to-device-counter'));
    const port = await freePort();
    server = await ServerProcess.create(`localhost:${port}`, port, {
      metrics: { enabled: false },
      registration: { enabled: true },
      handlers: [{ module: 'ping' }, { module: 'mls' }, { module: 'franking' }, { module: 'matrix-to-device-counter', config: { max_name_length: 10 } }],
    });
    server.entry = [join(ROOT, 'dist/src/main.js')];
    server.cwd = deployment;
    await server.start();
  }, 300_000);

  afterAll(async () => {
    await server.destroy();
    rmSync(deployment, { recursive: true, force: true });
  });

  it('runs the example module installed as a package: its migrations, its setup, its replies', async () => {
    expect(server.stderr).toContain('"msg":"counter module started"');
    const api = `${server.baseUrl}/_matrix/client/v3`;
    const reg = (await (
      await fetch(`${api}/register`, {
        method: 'POST',
        body: JSON.stringify({ username: 'counting', password: 'a long enough password', auth: { type: 'm.login.dummy' } }),
      })
    ).json()) as { access_token: string };
    const auth = { authorization: `Bearer ${reg.access_token}` };
    const first = (await (await fetch(`${api}/sync`, { headers: auth })).json()) as { next_batch: string };
    for (const txn of ['c1', 'c2']) {
      const put = await fetch(`${api}/sendToDevice/org.example.counter.bump/${txn}`, {
        method: 'PUT',
        headers: auth,
        body: JSON.stringify({ messages: { [`@:${server.serverName}`]: { '': { name: 'tea' } } } }),
      });
      expect(put.status).toBe(200);
    }
    const next = (await (await fetch(`${api}/sync?since=${first.next_batch}&timeout=5000`, { headers: auth })).json()) as {
      to_device: { events: { type: string; content: unknown }[] };
    };
    expect(next.to_device.events).toEqual([
      expect.objectContaining({ type: 'org.example.counter.value', content: { name: 'tea', count: 1 } }),
      expect.objectContaining({ type: 'org.example.counter.value', content: { name: 'tea', count: 2 } }),
    ]);
  });

  it('refuses a TypeScript module with a message saying to build it', () => {
    const config = join(deployment, 'ts.yaml');
    writeFileSync(config, JSON.stringify({ database: { data_dir: join(deployment, 'never') }, handlers: [{ module: join(EXAMPLE, 'src', 'index.ts') }] }));
    const env: NodeJS.ProcessEnv = { ...process.env, CONFIG_FILE: config, DATABASE_URL: '', LOG_LEVEL: 'silent' };
    const r = spawnSync(process.execPath, [join(ROOT, 'dist/src/main.js')], { cwd: deployment, env, encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('is TypeScript, and this server runs without a TypeScript loader (the production build): build the module to JavaScript');
    expect(existsSync(join(deployment, 'never'))).toBe(false);
  });

  it('serves /sendToDevice and /sync, and the ping handler module answers through the server user', async () => {
    const api = `${server.baseUrl}/_matrix/client/v3`;
    const reg = (await (
      await fetch(`${api}/register`, {
        method: 'POST',
        body: JSON.stringify({ username: 'built', password: 'a long enough password', auth: { type: 'm.login.dummy' } }),
      })
    ).json()) as { access_token: string; user_id: string };
    const auth = { authorization: `Bearer ${reg.access_token}` };
    const first = (await (await fetch(`${api}/sync`, { headers: auth })).json()) as { next_batch: string };
    const put = await fetch(`${api}/sendToDevice/org.example.ping/t1`, {
      method: 'PUT',
      headers: auth,
      body: JSON.stringify({ messages: { [`@:${server.serverName}`]: { '': { nonce: 'from-the-build' } } } }),
    });
    expect(put.status).toBe(200);
    const next = (await (await fetch(`${api}/sync?since=${first.next_batch}&timeout=5000`, { headers: auth })).json()) as {
      to_device: { events: { sender: string; type: string; content: { nonce?: string } }[] };
    };
    expect(next.to_device.events).toMatchObject([{ sender: `@:${server.serverName}`, type: 'org.example.pong', content: { nonce: 'from-the-build' } }]);
    expect(server.stderr).toContain('"name":"mls"');
  });

  it('runs the admin CLI from the build', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tds-built-cli-'));
    try {
      const env: NodeJS.ProcessEnv = { ...process.env, SERVER_NAME: 'cli.test', CONFIG_FILE: '', LOG_LEVEL: 'silent', DATA_DIR: join(dir, 'pglite') };
      delete env.DATABASE_URL;
      const created = spawnSync(process.execPath, ['dist/src/admin/cli.js', 'create-user', 'zoe', '--password', 'pw', '--json'], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 });
      expect(created.status).toBe(0);
      expect(JSON.parse(created.stdout)).toEqual({ user_id: '@zoe:cli.test' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
