import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppserviceRegistry } from '../src/appservice/registration.ts';
import type { CounterName } from '../src/metrics/counters.ts';
import { TestClient } from './support/client.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

/**
 * A federation destination or an appservice that refuses connections is that peer's failure: it
 * is counted, logged and backed off like any other failed send. Node's socket errors carry the
 * same codes (ECONNREFUSED…) that say "the database is unavailable" when a query's connection
 * fails, which are retried every second without counting or growing the backoff; a peer's must
 * not be taken for one.
 */

/** A port nothing listens on: bound, then closed. */
async function closedPort(): Promise<number> {
  const srv: Server = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

let t: TestApp;
let alice: TestClient;

beforeAll(async () => {
  const port = await closedPort();
  const registry = AppserviceRegistry.fromFiles(
    [
      {
        content: {
          id: 'gone',
          url: `http://127.0.0.1:${port}`,
          as_token: 'as-gone',
          hs_token: 'hs-gone',
          sender_localpart: 'gonebot',
          namespaces: { users: [{ exclusive: true, regex: `@gone_.*:${SERVER_NAME}` }] },
          receive_ephemeral: true,
        },
        source: 'gone.yaml',
      },
    ],
    SERVER_NAME,
  );
  // A first retry after 2 s at the soonest (jitter halves the backoff): a refused peer is counted
  // once, not again at the database's one-second retry.
  t = await startTestApp({ federation: { allow_http: true, static_routes: { 'refusing.example': `http://127.0.0.1:${port}` }, backoff_initial_ms: 4_000 } }, undefined, { appservices: registry });
  alice = await TestClient.register(t.app, 'alice');
  const res = await t.app.request('/_matrix/client/v3/register', {
    method: 'POST',
    headers: { authorization: 'Bearer as-gone' },
    body: JSON.stringify({ type: 'm.login.application_service', username: 'gone_user', device_id: 'D' }),
  });
  expect(res.status).toBe(200);
});

afterAll(async () => {
  await t?.close();
});

/** The peer's failure count once the send was tried (or 0 after 5 s: the failure was never counted). */
async function failuresAfter(metric: CounterName, labels: Record<string, string>, send: () => Promise<unknown>): Promise<number> {
  await send();
  const deadline = Date.now() + 5_000;
  while ((t.services.counters.get(metric, labels) ?? 0) === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
  return t.services.counters.get(metric, labels) ?? 0;
}

describe('a peer refusing connections', () => {
  it('federation: the destination failed once and waits out its backoff', async () => {
    const n = await failuresAfter('federation_send_failures_total', { destination: 'refusing.example' }, () => alice.sendToDevice('m.test', { '@carol:refusing.example': { CAROL: {} } }));
    expect(n).toBe(1);
  });

  it('appservice: the appservice failed once and waits out its backoff', async () => {
    const n = await failuresAfter('appservice_send_failures_total', { appservice: 'gone' }, () => alice.sendToDevice('m.test', { [`@gone_user:${SERVER_NAME}`]: { D: {} } }));
    expect(n).toBe(1);
  });
});
