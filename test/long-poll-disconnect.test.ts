import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClient, overHttp } from './support/client.ts';
import { serveOverHttp } from './support/http-server.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

// A long-poll notices its client going away through the socket (node-server's ServerResponse)
// or, without one, the request's AbortSignal: either way it stops waiting at once, leaves the
// notifier, and stops counting as a long-poll in flight.

let t: TestApp;
let listener: { baseUrl: string; close(): Promise<void> };

beforeAll(async () => {
  t = await startTestApp();
  listener = await serveOverHttp(t);
});
afterAll(async () => {
  await listener.close();
  await t.close();
});

async function until(condition: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Opens a request over a socket of its own; `abort()` closes that socket without an answer. */
function rawRequest(method: string, path: string, token: string, body?: string): { abort(): void; done: Promise<void> } {
  const url = new URL(path, listener.baseUrl);
  const req = http.request({ host: url.hostname, port: url.port, method, path: `${url.pathname}${url.search}`, headers: { authorization: `Bearer ${token}` }, agent: false });
  const done = new Promise<void>((resolve) => {
    req.on('response', (res) => res.resume().on('end', () => resolve()));
    req.on('error', () => resolve());
  });
  req.end(body);
  return { abort: () => req.destroy(), done };
}

describe('a long-poll whose client disconnects', () => {
  it('/sync: leaves the notifier and the in-flight gauge promptly, and loses nothing', async () => {
    const api = overHttp(listener.baseUrl);
    const alice = await TestClient.register(api, 'gone_alice');
    const bob = await TestClient.register(api, 'gone_bob');
    const initial = await bob.sync();
    const poll = rawRequest('GET', `/_matrix/client/v3/sync?since=${initial.next_batch}&timeout=60000`, bob.token);
    await until(() => t.services.notifier.waiting === 1, 'the poll to park');
    const started = Date.now();
    poll.abort();
    await until(() => t.services.notifier.waiting === 0, 'the poll to leave the notifier');
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(await t.metrics.render()).toMatch(/^to_device_sync_long_polls 0$/m);
    await poll.done;

    // The message sent after the disconnect is delivered to the next sync, once.
    await alice.sendToDevice('m.after', { [bob.userId]: { [bob.deviceId]: { n: 1 } } });
    const next = await bob.sync({ since: initial.next_batch, timeout: 5_000 });
    expect(next.to_device.events.map((e) => e.type)).toEqual(['m.after']);
  });

  it('sliding sync: leaves the notifier promptly', async () => {
    const api = overHttp(listener.baseUrl);
    const carol = await TestClient.register(api, 'gone_carol');
    const initial = await carol.sync();
    const body = JSON.stringify({ extensions: { to_device: { enabled: true, since: initial.next_batch } } });
    const poll = rawRequest('POST', '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?pos=1&timeout=60000', carol.token, body);
    await until(() => t.services.notifier.waiting === 1, 'the poll to park');
    poll.abort();
    await until(() => t.services.notifier.waiting === 0, 'the poll to leave the notifier', 1_000);
    await poll.done;
  });

  it('without a socket (app.request): the AbortSignal ends the wait', async () => {
    const dave = await TestClient.register(t.app, 'gone_dave');
    const initial = await dave.sync();
    const abort = new AbortController();
    const answered = Promise.resolve(
      t.app.request(`/_matrix/client/v3/sync?since=${initial.next_batch}&timeout=60000`, { headers: { authorization: `Bearer ${dave.token}` }, signal: abort.signal }),
    ).then(
      (res) => res.status,
      () => 'aborted',
    );
    await until(() => t.services.notifier.waiting === 1, 'the poll to park');
    abort.abort();
    await until(() => t.services.notifier.waiting === 0, 'the poll to leave the notifier', 1_000);
    await answered;
  });
});
