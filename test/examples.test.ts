import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveOverHttp } from './support/http-server.ts';
import { runScript } from './support/run-script.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

let t: TestApp;
let http: Awaited<ReturnType<typeof serveOverHttp>>;

beforeAll(async () => {
  t = await startTestApp();
  http = await serveOverHttp(t);
});
afterAll(async () => {
  await http.close();
  await t.close();
});

const run = (script: string, env: Record<string, string>) => runScript(script, env);

describe('examples', () => {
  it('examples/ping.ts gets its pongs over real HTTP, twice (register, then log in)', async () => {
    for (const _ of [1, 2]) {
      const r = await run('examples/ping.ts', { HOMESERVER: http.baseUrl, USERNAME: 'pinger', COUNT: '2' });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('pinging @:test.local');
      expect(r.stdout.match(/^pong nonce=\S+ server_ts=\d+ round trip [\d.]+ ms$/gm)).toHaveLength(2);
    }
  }, 120_000);

  it('examples/js-sdk-client.ts (matrix-js-sdk, no crypto) receives the server user\'s pong as a ToDeviceEvent', async () => {
    const r = await run('examples/js-sdk-client.ts', { HOMESERVER: http.baseUrl, USERNAME: 'jsdk' });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ToDeviceEvent org\.example\.pong from @:test\.local nonce=js-sdk-\d+ after [\d.]+ ms$/m);
  }, 120_000);
});
