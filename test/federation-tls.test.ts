import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectToDevice, overHttp, TestClient } from './support/client.ts';
import { serveOverHttp } from './support/http-server.ts';
import { freePort, ServerProcess } from './support/server-process.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

/**
 * Synapse dials a server name with an explicit port over HTTPS; so the federation listener
 * serves TLS from configured certificate files, and the sender trusts an extra CA file.
 */
const dir = mkdtempSync(join(tmpdir(), 'tds-tls-'));
let remote: ServerProcess;
let local: TestApp;
let localHttp: Awaited<ReturnType<typeof serveOverHttp>>;
let tlsPort: number;

beforeAll(async () => {
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    '-subj', '/CN=tls.test', '-addext', 'subjectAltName=DNS:tls.test',
  ], { stdio: 'ignore' });
  const [clientPort, fedPort, localPort] = await Promise.all([freePort(), freePort(), freePort()]);
  tlsPort = fedPort;
  local = await startTestApp(
    { federation: { static_routes: { 'tls.test': `https://127.0.0.1:${tlsPort}` }, backoff_initial_ms: 100, backoff_max_ms: 400 } },
    undefined,
    { federationCa: readFileSync(join(dir, 'cert.pem'), 'utf8') },
  );
  localHttp = await serveOverHttp(local, localPort);
  remote = await ServerProcess.create('tls.test', clientPort, {
    federation: {
      allow_http: true,
      static_routes: { [SERVER_NAME]: localHttp.baseUrl },
      listen: { host: '127.0.0.1', port: tlsPort, tls_cert: join(dir, 'cert.pem'), tls_key: join(dir, 'key.pem') },
    },
  });
  await remote.start();
}, 90_000);

afterAll(async () => {
  await remote?.destroy();
  await localHttp?.close();
  await local?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('federation over TLS', () => {
  it('serves the key and federation API over HTTPS and receives messages sent over it', async () => {
    const alice = await TestClient.register(local.app, 'alice');
    const zed = await TestClient.register(overHttp(remote.baseUrl), 'zed');
    expect((await alice.sendToDevice('m.tls', { '@zed:tls.test': { [zed.deviceId]: { secure: true } } })).status).toBe(200);
    const got = await collectToDevice(zed, 1);
    expect(got).toEqual([{ sender: `@alice:${SERVER_NAME}`, type: 'm.tls', content: { secure: true } }]);
  });

  it('refuses to send to a TLS server whose certificate it does not trust', async () => {
    const untrusting = await startTestApp({
      federation: { static_routes: { 'tls.test': `https://127.0.0.1:${tlsPort}` }, backoff_initial_ms: 50, backoff_max_ms: 100 },
    });
    try {
      const u = await TestClient.register(untrusting.app, 'u');
      await u.sendToDevice('m.tls', { '@zed:tls.test': { '*': {} } });
      await new Promise((r) => setTimeout(r, 500));
      expect(untrusting.services.counters.get('federation_send_failures_total', { destination: 'tls.test' })).toBeGreaterThan(0);
      expect(untrusting.services.counters.get('federation_transactions_sent_total', { destination: 'tls.test' })).toBe(0);
    } finally {
      await untrusting.close();
    }
  });
});
