import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, ServerProcess } from './support/server-process.ts';

const ROOT = new URL('..', import.meta.url).pathname;

// `npm run build` then `npm run start:prod`: the server, its migrations and the default handler
// modules as plain JavaScript, with no TypeScript loader at run time.
describe('production build', () => {
  let server: ServerProcess;

  beforeAll(async () => {
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'ignore', timeout: 120_000 });
    const port = await freePort();
    server = await ServerProcess.create(`localhost:${port}`, port, { metrics: { enabled: false }, registration: { enabled: true } });
    server.entry = ['dist/src/main.js'];
    await server.start();
  }, 180_000);

  afterAll(async () => {
    await server.destroy();
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
