import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as v from 'valibot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import ping from '../handlers/ping/index.ts';
import { createApp } from '../src/app.ts';
import { AppserviceRegistry } from '../src/appservice/registration.ts';
import { parseConfig } from '../src/config/config.ts';
import { Counters, MAX_SERIES, STORED_COUNTER } from '../src/metrics/counters.ts';
import { defineHandler, type HandlerModule } from '../src/sdk/define-handler.ts';
import { TestClient } from './support/client.ts';
import { startFailingPeer } from './support/failing-peer.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';
import { createTestDatabase } from './support/test-database.ts';

const SERVER_USER = `@:${SERVER_NAME}`;

const failing = defineHandler({
  name: 'failing',
  events: {
    'org.test.fail': {
      schema: v.object({}),
      handle() {
        throw new Error('handler bug');
      },
    },
  },
});

const slow = defineHandler({
  name: 'slow',
  events: {
    'org.test.slow': {
      schema: v.object({}),
      async handle() {
        // Outlives the scenario's 100 ms dispatch deadline, then finishes harmlessly.
        await new Promise((r) => setTimeout(r, 1000));
      },
    },
  },
});

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text format (enough of it for these tests). */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) throw new Error(`unparsable line: ${line}`);
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1] as string, l[2] as string]));
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return samples;
}

let t: TestApp;
let peer: Awaited<ReturnType<typeof startFailingPeer>>;
let alice: TestClient;
let bob: TestClient;

type Scrape = { samples: Sample[]; value(name: string, labels?: Record<string, string>): number | undefined };

async function scrape(app: TestApp = t): Promise<Scrape> {
  const res = await app.metricsApp.request('/metrics');
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
  const samples = parse(await res.text());
  return {
    samples,
    value: (name, labels = {}) =>
      samples.find((s) => s.name === name && Object.keys(s.labels).length === Object.keys(labels).length && Object.entries(labels).every(([k, val]) => s.labels[k] === val))?.value,
  };
}

beforeAll(async () => {
  peer = await startFailingPeer();
  t = await startTestApp(
    // remote.example fails every transaction: the federation sender sends, fails and retries.
    { federation: { allow_http: true, static_routes: { 'remote.example': peer.baseUrl }, backoff_initial_ms: 60_000 } },
    [{ module: ping as HandlerModule<unknown> }, { module: failing as HandlerModule<unknown> }],
  );
  alice = await TestClient.register(t.app, 'alice');
  bob = await TestClient.register(t.app, 'bob');
});

afterAll(async () => {
  await peer?.close();
  await t?.close();
});

describe('GET /metrics', () => {
  it('is served by the metrics app only, not on the client listener', async () => {
    expect((await t.app.request('/metrics')).status).toBe(404);
    const m = await scrape();
    // Declared counters are there at 0 before anything happened.
    expect(m.value('to_device_dropped_total', { reason: 'queue_cap' })).toBe(0);
    expect(m.value('to_device_delivered_total')).toBe(0);
    expect(m.value('to_device_queue_depth')).toBe(0);
    expect(m.value('to_device_sync_long_polls')).toBe(0);
  });

  it('moves the counters and gauges through a scripted scenario', async () => {
    // Three messages for bob, one for an unknown device of his, one for an invalid user ID.
    for (let i = 0; i < 2; i++) {
      expect((await alice.sendToDevice('m.test', { [bob.userId]: { [bob.deviceId]: { i } } })).status).toBe(200);
    }
    expect((await alice.sendToDevice('m.test', { [bob.userId]: { [bob.deviceId]: { i: 2 }, NOSUCHDEVICE: {} }, 'not-a-user-id': { X: {} } })).status).toBe(200);
    // One message for a remote user: it waits in the federation outbox (the peer is down).
    await alice.sendToDevice('m.test', { '@carol:remote.example': { CAROL: {} } });
    // The server user: one handled ping, one failing handler, one unknown event type.
    await alice.sendToDevice('org.example.ping', { [SERVER_USER]: { '': { nonce: 'n1' } } });
    await alice.sendToDevice('org.test.fail', { [SERVER_USER]: { '': {} } });
    await alice.sendToDevice('org.test.nobody', { [SERVER_USER]: { '': {} } });

    let m = await scrape();
    expect(m.value('to_device_dropped_total', { reason: 'unknown_device' })).toBe(1);
    expect(m.value('to_device_dropped_total', { reason: 'invalid_user' })).toBe(1);
    // bob's 3, and alice's pong.
    expect(m.value('to_device_queue_depth')).toBe(4);
    expect(m.value('to_device_largest_queue_depth', { user_id: bob.userId, device_id: bob.deviceId })).toBe(3);
    expect(m.value('to_device_largest_queue_depth', { user_id: alice.userId, device_id: alice.deviceId })).toBe(1);
    expect(m.value('federation_queue_depth', { destination: 'remote.example' })).toBe(1);
    expect(m.value('server_user_dispatch_total', { type: 'org.example.ping', outcome: 'handled' })).toBe(1);
    expect(m.value('server_user_dispatch_total', { type: 'org.test.fail', outcome: 'error' })).toBe(1);
    expect(m.value('server_user_dispatch_total', { type: 'org.test.nobody', outcome: 'unknown_type' })).toBe(1);
    expect(m.value('server_user_dispatch_duration_seconds_count', { type: 'org.example.ping', outcome: 'handled' })).toBe(1);
    expect(m.value('server_user_dispatch_duration_seconds_count', { type: 'org.test.fail', outcome: 'error' })).toBe(1);
    // Unknown types are counted but not timed (their names come from clients).
    expect(m.samples.some((s) => s.name.startsWith('server_user_dispatch_duration_seconds') && s.labels.type === 'org.test.nobody')).toBe(false);
    expect(
      m.value('http_request_duration_seconds_count', { method: 'PUT', route: '/_matrix/client/v3/sendToDevice/:eventType/:txnId', status: '200' }),
    ).toBe(7);

    // The federation sender tried remote.example and failed: counted and timed per destination.
    const deadline = Date.now() + 10_000;
    while ((m.value('federation_send_failures_total', { destination: 'remote.example' }) ?? 0) < 1 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      m = await scrape();
    }
    expect(m.value('federation_send_failures_total', { destination: 'remote.example' })).toBe(1);
    expect(m.value('federation_send_duration_seconds_count', { destination: 'remote.example', outcome: 'error' })).toBe(1);

    // bob syncs: 3 delivered; acknowledging them empties his queue.
    const first = await bob.sync();
    expect(first.to_device.events).toHaveLength(3);
    await bob.sync({ since: first.next_batch });
    m = await scrape();
    expect(m.value('to_device_delivered_total')).toBe(3);
    expect(m.value('to_device_queue_depth')).toBe(1);
    expect(m.value('to_device_largest_queue_depth', { user_id: bob.userId, device_id: bob.deviceId })).toBeUndefined();

    // A long-poll in flight shows in the gauge; a message wakes it and is counted.
    const latest = await bob.sync();
    const polling = bob.sync({ since: latest.next_batch, timeout: 10_000 });
    while ((m.value('to_device_sync_long_polls') ?? 0) < 1 && Date.now() < deadline + 10_000) {
      await new Promise((r) => setTimeout(r, 20));
      m = await scrape();
    }
    expect(m.value('to_device_sync_long_polls')).toBe(1);
    const wakeupsBefore = m.value('to_device_sync_wakeups_total') ?? 0;
    await alice.sendToDevice('m.test', { [bob.userId]: { [bob.deviceId]: { wake: true } } });
    expect((await polling).to_device.events).toHaveLength(1);
    m = await scrape();
    expect(m.value('to_device_sync_long_polls')).toBe(0);
    expect(m.value('to_device_sync_wakeups_total')).toBe(wakeupsBefore + 1);
    expect(m.value('to_device_delivered_total')).toBe(4);
    // The counters API reads the same values.
    expect(t.services.counters.get('to_device_delivered_total')).toBe(4);
  });
});

describe('drops by maintenance and the remaining dispatch outcomes', () => {
  let small: TestApp;
  beforeAll(async () => {
    small = await startTestApp({ limits: { device_queue_max: 2, to_device_ttl_hours: 1 }, server_user: { dispatch_deadline_ms: 100 } }, [
      { module: ping as HandlerModule<unknown> },
      { module: slow as HandlerModule<unknown> },
    ]);
  });
  afterAll(async () => {
    await small?.close();
  });

  it('scrape shows queue_cap and ttl drops, invalid_content and timeout dispatches', async () => {
    const target = await TestClient.register(small.app, 'target');
    const sender = await TestClient.register(small.app, 'sender');
    for (let i = 0; i < 4; i++) await sender.sendToDevice('m.test', { [target.userId]: { [target.deviceId]: { i } } });
    // A nonce must be a string; the slow handler misses the deadline.
    await sender.sendToDevice('org.example.ping', { [SERVER_USER]: { '': { nonce: 7 } } });
    await sender.sendToDevice('org.test.slow', { [SERVER_USER]: { '': {} } });

    const capped = await small.maintenance.runOnce();
    expect(capped.queueCap).toBe(2);
    // Two hours on, as far as maintenance is concerned: what is left is past the TTL.
    const expired = await small.maintenance.runOnce(Date.now() + 2 * 3600_000);
    expect(expired.ttl).toBe(2);

    const m = await scrape(small);
    expect(m.value('to_device_dropped_total', { reason: 'queue_cap' })).toBe(2);
    expect(m.value('to_device_dropped_total', { reason: 'ttl' })).toBe(2);
    expect(m.value('to_device_queue_depth')).toBe(0);
    expect(m.value('server_user_dispatch_total', { type: 'org.example.ping', outcome: 'invalid_content' })).toBe(1);
    expect(m.value('server_user_dispatch_total', { type: 'org.test.slow', outcome: 'timeout' })).toBe(1);
    expect(m.value('server_user_dispatch_duration_seconds_count', { type: 'org.test.slow', outcome: 'timeout' })).toBe(1);
    // The deadline is 100 ms; libuv runs timers on a millisecond clock read at the start of each
    // loop turn, so measured with performance.now() one may fire up to 1 ms early (seen: 99.8 ms).
    expect(m.value('server_user_dispatch_duration_seconds_sum', { type: 'org.test.slow', outcome: 'timeout' })).toBeGreaterThanOrEqual(0.099);
  });
});

describe('to_device_stored_total', () => {
  let fresh: TestApp;
  beforeAll(async () => {
    fresh = await startTestApp();
  });
  afterAll(async () => {
    await fresh?.close();
  });

  it('counts each message stored into a device queue', async () => {
    expect((await scrape(fresh)).value(STORED_COUNTER)).toBe(0);
    const carol = await TestClient.register(fresh.app, 'carol', { deviceId: 'PHONE' });
    await TestClient.login(fresh.app, 'carol', { deviceId: 'LAPTOP' });
    const dave = await TestClient.register(fresh.app, 'dave');
    // One device, then `*` for a user with two devices: three messages stored.
    expect((await dave.sendToDevice('m.test', { [carol.userId]: { PHONE: { n: 1 } } })).status).toBe(200);
    expect((await dave.sendToDevice('m.test', { [carol.userId]: { '*': { n: 2 } } })).status).toBe(200);
    // Not stored: an unknown device (counted as dropped instead).
    await dave.sendToDevice('m.test', { [carol.userId]: { NOSUCH: {} } });
    expect((await scrape(fresh)).value(STORED_COUNTER)).toBe(3);
    // The server user's message is dispatched, never queued; the handler's reply to dave is.
    await dave.sendToDevice('org.example.ping', { [SERVER_USER]: { '': { nonce: 's' } } });
    expect((await scrape(fresh)).value(STORED_COUNTER)).toBe(4);
  });
});

describe('appservice sends', () => {
  let withAs: TestApp;
  let appservice: Server;
  const received: string[] = [];
  const reg = (id: string, url: string) => ({
    content: {
      id,
      url,
      as_token: `as-${id}`,
      hs_token: `hs-${id}`,
      sender_localpart: `${id}bot`,
      namespaces: { users: [{ exclusive: true, regex: `@${id}_.*:${SERVER_NAME}` }] },
      receive_ephemeral: true,
    },
    source: `${id}.yaml`,
  });

  beforeAll(async () => {
    // A real appservice on loopback that acknowledges every transaction.
    appservice = createServer((req, res) => {
      received.push(req.url ?? '');
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
    await new Promise<void>((r) => appservice.listen(0, '127.0.0.1', r));
    const port = (appservice.address() as AddressInfo).port;
    withAs = await startTestApp({ federation: { backoff_initial_ms: 60_000 } }, undefined, {
      // "down" points at a closed port: its send fails fast and waits a minute to retry.
      appservices: AppserviceRegistry.fromFiles([reg('up', `http://127.0.0.1:${port}`), reg('down', 'http://127.0.0.1:1')], SERVER_NAME),
    });
  });
  afterAll(async () => {
    await withAs?.close();
    await new Promise((r) => appservice?.close(r));
  });

  it('are timed per appservice and outcome; failures counted per appservice', async () => {
    const sender = await TestClient.register(withAs.app, 'sender');
    for (const id of ['up', 'down']) {
      const res = await withAs.app.request('/_matrix/client/v3/register', {
        method: 'POST',
        headers: { authorization: `Bearer as-${id}` },
        body: JSON.stringify({ type: 'm.login.application_service', username: `${id}_user`, device_id: 'D' }),
      });
      expect(res.status).toBe(200);
      await sender.sendToDevice('m.test', { [`@${id}_user:${SERVER_NAME}`]: { D: { to: id } } });
    }
    let m = await scrape(withAs);
    const deadline = Date.now() + 10_000;
    // The sender counts a transaction when it is answered and deletes its rows in the step after:
    // wait for both, or a scrape between them still sees the delivered message queued.
    const settled = () =>
      (m.value('appservice_transactions_sent_total', { appservice: 'up' }) ?? 0) >= 1 &&
      (m.value('appservice_send_failures_total', { appservice: 'down' }) ?? 0) >= 1 &&
      m.value('appservice_queue_depth', { appservice: 'up' }) === undefined;
    while (!settled() && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      m = await scrape(withAs);
    }
    expect(received).toHaveLength(1);
    expect(m.value('appservice_transactions_sent_total', { appservice: 'up' })).toBe(1);
    expect(m.value('appservice_messages_sent_total', { appservice: 'up' })).toBe(1);
    expect(m.value('appservice_send_duration_seconds_count', { appservice: 'up', outcome: 'ok' })).toBe(1);
    expect(m.value('appservice_send_duration_seconds_count', { appservice: 'up', outcome: 'error' })).toBeUndefined();
    expect(m.value('appservice_send_failures_total', { appservice: 'down' })).toBe(1);
    expect(m.value('appservice_send_duration_seconds_count', { appservice: 'down', outcome: 'error' })).toBe(1);
    expect(m.value('appservice_queue_depth', { appservice: 'down' })).toBe(1);
    expect(m.value('appservice_queue_depth', { appservice: 'up' })).toBeUndefined();
  });
});

describe('health', () => {
  it('GET /health answers on both listeners; GET /health/ready checks the database', async () => {
    for (const app of [t.app, t.metricsApp]) {
      expect(await (await app.request('/health')).json()).toEqual({ status: 'ok' });
      const ready = await app.request('/health/ready');
      expect(ready.status).toBe(200);
      expect(await ready.json()).toEqual({ status: 'ready' });
    }
  });

  it('is not ready when the database does not answer, or once the server is stopping', async () => {
    const database = await createTestDatabase();
    const built = createApp({ config: parseConfig({ server_name: SERVER_NAME }), database });
    expect((await built.app.request('/health/ready')).status).toBe(200);
    await built.stop();
    const stopping = await built.app.request('/health/ready');
    expect(stopping.status).toBe(503);
    expect(await stopping.json()).toMatchObject({ errcode: 'M_UNKNOWN' });

    const other = createApp({ config: parseConfig({ server_name: SERVER_NAME }), database });
    await database.close();
    const down = await other.app.request('/health/ready');
    expect(down.status).toBe(503);
    expect(await down.json()).toEqual({ errcode: 'M_UNKNOWN', error: 'The database is not available' });
    // Liveness does not depend on the database.
    expect((await other.app.request('/health')).status).toBe(200);
  });
});

describe('Counters', () => {
  it('keeps exact values for get() and snapshot(), and caps the exported label combinations', async () => {
    const c = new Counters();
    for (let i = 0; i < MAX_SERIES + 5; i++) c.inc('server_user_dispatch_total', { type: `t${i}`, outcome: 'unknown_type' });
    expect(c.get('server_user_dispatch_total', { type: `t${MAX_SERIES + 4}`, outcome: 'unknown_type' })).toBe(1);
    expect(Object.keys(c.snapshot())).toHaveLength(MAX_SERIES + 5);
    const samples = parse(await c.registry.metrics()).filter((s) => s.name === 'server_user_dispatch_total');
    expect(samples).toHaveLength(MAX_SERIES + 1);
    expect(samples.find((s) => s.labels.type === '_other')?.value).toBe(5);
  });

  it('keeps each registry to itself, and knows only declared names', async () => {
    const a = new Counters();
    const b = new Counters();
    a.inc('federation_edus_rejected_total', { reason: 'x' }, 2);
    expect(a.get('federation_edus_rejected_total', { reason: 'x' })).toBe(2);
    expect(parse(await a.registry.metrics()).find((s) => s.name === 'federation_edus_rejected_total' && s.labels.reason === 'x')?.value).toBe(2);
    expect(parse(await b.registry.metrics()).find((s) => s.name === 'federation_edus_rejected_total' && s.labels.reason === 'x')).toBeUndefined();
    // A misspelt name is a type error, not a new metric.
    // @ts-expect-error not a declared counter
    expect(() => a.inc('federation_edu_rejected_total')).toThrow(/not a declared counter/);
  });

  it('kept in memory only (a test kit\'s), count the same and know the same names, with no registry to export', () => {
    const c = new Counters(null);
    c.inc('federation_edus_rejected_total', { reason: 'x' }, 2);
    c.inc('federation_edus_rejected_total', { reason: 'x' });
    c.observe('to_device_group_commit_batch_size', {}, 3);
    expect(c.get('federation_edus_rejected_total', { reason: 'x' })).toBe(3);
    expect(c.snapshot()).toEqual({ 'federation_edus_rejected_total{reason="x"}': 3 });
    // @ts-expect-error not a declared counter
    expect(() => c.inc('federation_edu_rejected_total')).toThrow(/not a declared counter/);
    // @ts-expect-error not a declared histogram
    expect(() => c.observe('to_device_group_commit_batch', {}, 1)).toThrow(/not a declared histogram/);
    expect(() => c.registry).toThrow(/kept in memory only/);
  });
});
