import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeBase64 } from '../src/shared/base64.ts';
import { signingKeyFromSeed } from '../src/shared/ed25519.ts';
import { signJson } from '../src/federation/json-signing.ts';
import { KEY_FETCH_DEADLINE_MS } from '../src/federation/remote-keys.ts';
import { TestClient } from './support/client.ts';
import { FakeServer } from './support/fake-server.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

/**
 * Inbound requests whose origin we hold no key for, while the federation sender is busy: 50
 * destinations on one peer whose transactions never get an answer, which keeps every sending
 * connection to that peer open. Refusing a forged request must not wait behind them.
 */
const BUSY = Array.from({ length: 50 }, (_, i) => `busy${i}.test`);
const forged = new FakeServer('forged.test');
let peer: Server;
let silent: Server;
let t: TestApp;
let sendsHeld = 0;

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

beforeAll(async () => {
  // One peer hosting many server names (by Host header): it answers /version and keys at once
  // and never answers a transaction.
  peer = createServer((req, res) => {
    const host = req.headers.host ?? '';
    if (req.url === '/_matrix/federation/v1/version') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"server":{"name":"busy","version":"1"}}');
    } else if (req.url === '/_matrix/key/v2/server' && host === forged.serverName) {
      const body = signJson(
        { server_name: host, verify_keys: { [forged.key.keyId]: { key: encodeBase64(forged.key.publicKey) } }, old_verify_keys: {}, valid_until_ts: Date.now() + 3600_000 },
        host,
        forged.key,
      );
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    } else if (req.url?.startsWith('/_matrix/federation/v1/send/') === true) {
      sendsHeld++;
    } else {
      res.writeHead(404).end();
    }
  });
  // A server that takes connections and never answers anything.
  silent = createServer(() => {});
  const [peerUrl, silentUrl] = await Promise.all([listen(peer), listen(silent)]);
  const routes = Object.fromEntries([...BUSY, forged.serverName].map((name) => [name, peerUrl]));
  t = await startTestApp({ federation: { allow_http: true, static_routes: { ...routes, 'silent.test': silentUrl } } });
  const alice = await TestClient.register(t.app, 'alice');
  for (const name of BUSY) expect((await alice.sendToDevice('m.busy', { [`@bob:${name}`]: { D: { n: 1 } } })).status).toBe(200);
  const until = Date.now() + 10_000;
  while (sendsHeld < 16 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
}, 60_000);

afterAll(async () => {
  await t?.close();
  peer.closeAllConnections();
  silent.closeAllConnections();
  await Promise.all([new Promise((r) => peer.close(r)), new Promise((r) => silent.close(r))]);
});

async function forgedRequest(origin: FakeServer): Promise<{ status: number; ms: number; body: unknown }> {
  const uri = `/_matrix/federation/v1/send/f${Math.random()}`;
  const body = { origin: origin.serverName, origin_server_ts: Date.now(), pdus: [], edus: [] };
  // Signed with a key that is not the origin's.
  const authorization = origin.authorization('PUT', uri, SERVER_NAME, body, { signWith: signingKeyFromSeed('ed25519:fake', Buffer.alloc(32, 7)) });
  const started = performance.now();
  const res = await t.app.request(uri, { method: 'PUT', headers: { authorization, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, ms: performance.now() - started, body: await res.json() };
}

describe('inbound key fetches while the sender is busy', () => {
  it('has the sender busy: at least 16 transactions to the peer held open (its connection limit per host)', () => {
    expect(sendsHeld).toBeGreaterThanOrEqual(16);
  });

  it('refuses a request signed with a key its origin does not have, without queueing behind the sender', async () => {
    const res = await forgedRequest(forged);
    expect(res.status).toBe(401);
    expect(res.body).toMatchObject({ errcode: 'M_UNAUTHORIZED' });
    expect(res.ms).toBeLessThan(2_000);
  });

  it('gives up on an origin that never answers after the key-fetch deadline, and refuses it at once for a while after', async () => {
    const first = await forgedRequest(new FakeServer('silent.test'));
    expect(first.status).toBe(401);
    expect(first.body).toMatchObject({ errcode: 'M_UNAUTHORIZED', error: expect.stringContaining('silent.test') });
    expect(first.ms).toBeGreaterThanOrEqual(KEY_FETCH_DEADLINE_MS - 50);
    expect(first.ms).toBeLessThan(KEY_FETCH_DEADLINE_MS + 1_500);
    const again = await forgedRequest(new FakeServer('silent.test'));
    expect(again.status).toBe(401);
    expect(again.ms).toBeLessThan(500);
  }, 20_000);
});
