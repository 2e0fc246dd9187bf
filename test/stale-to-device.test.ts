/**
 * MSC3944: a key or secret request cancellation removes its still-undelivered request, and is
 * not stored itself; a request a response may have carried keeps its cancellation
 * (src/services/stale-requests.ts has the rule and why it is safe).
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STALE_DROPPED } from '../src/services/stale-requests.ts';
import { DeviceInboxStore } from '../src/storage/device-inbox-store.ts';
import { queryRows } from '../src/shared/query-rows.ts';
import { TestClient, type SyncResponse } from './support/client.ts';
import { FakeServer } from './support/fake-server.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';
import { usingPostgres } from './support/test-database.ts';

const REMOTE = 'remote.test';
let t: TestApp;
let fake: FakeServer;
let alice: TestClient;
let n = 0;

beforeAll(async () => {
  fake = new FakeServer(REMOTE);
  await fake.start();
  t = await startTestApp({ federation: { allow_http: true, static_routes: { [REMOTE]: fake.baseUrl } } });
  alice = await TestClient.register(t.app, 'alice', { deviceId: 'ALICEPHONE' });
});
afterAll(async () => {
  await t.close();
  await fake.stop();
});

const KEY = 'm.room_key_request';
const SECRET = 'm.secret.request';

function request(requestId: string, requestingDeviceId = 'ALICEPHONE', type = KEY): Record<string, unknown> {
  return type === KEY
    ? { action: 'request', requesting_device_id: requestingDeviceId, request_id: requestId, body: { algorithm: 'm.megolm.v1.aes-sha2', room_id: '!r:x', session_id: 's', sender_key: 'k' } }
    : { action: 'request', requesting_device_id: requestingDeviceId, request_id: requestId, name: 'm.cross_signing.master' };
}

function cancellation(requestId: string, requestingDeviceId = 'ALICEPHONE'): Record<string, unknown> {
  return { action: 'request_cancellation', requesting_device_id: requestingDeviceId, request_id: requestId };
}

async function fresh(): Promise<TestClient> {
  return TestClient.register(t.app, `bob${++n}`);
}

async function send(from: TestClient, to: TestClient, type: string, content: Record<string, unknown>, txnId?: string): Promise<void> {
  const res = await from.sendToDevice(type, { [to.userId]: { [to.deviceId]: content } }, txnId);
  expect(res).toEqual({ status: 200, body: {} });
}

/** Everything queued for the device: syncs until the queue is empty, acknowledging as it goes. */
async function drain(client: TestClient, since: string | null = null): Promise<SyncResponse['to_device']['events']> {
  const events: SyncResponse['to_device']['events'] = [];
  for (;;) {
    const s = await client.sync({ since });
    events.push(...s.to_device.events);
    if (s.to_device.events.length === 0) return events;
    since = s.next_batch;
  }
}

const dropped = (type = KEY) => t.services.counters.get(STALE_DROPPED, { type });

describe('MSC3944: cancelled requests that were never delivered', () => {
  it('drops a queued room key request and its cancellation; the messages around them stay', async () => {
    const bob = await fresh();
    const before = dropped();
    await send(alice, bob, 'm.before', { n: 1 });
    await send(alice, bob, KEY, request('req1'));
    await send(alice, bob, 'm.between', { n: 2 });
    await send(alice, bob, KEY, cancellation('req1'));
    await send(alice, bob, 'm.after', { n: 3 });
    const events = await drain(bob);
    expect(events.map((e) => e.type)).toEqual(['m.before', 'm.between', 'm.after']);
    // One per message: the request and its cancellation.
    expect(dropped() - before).toBe(2);
  });

  it('does the same for m.secret.request', async () => {
    const bob = await fresh();
    const before = dropped(SECRET);
    await send(alice, bob, SECRET, request('s1', 'ALICEPHONE', SECRET));
    await send(alice, bob, SECRET, cancellation('s1'));
    expect(await drain(bob)).toEqual([]);
    expect(dropped(SECRET) - before).toBe(2);
  });

  it('drops every request of the key queued since the last cancellation, and keeps that cancellation', async () => {
    const bob = await fresh();
    await send(alice, bob, KEY, request('re'));
    const s = await bob.sync();
    expect(s.to_device.events.map((e) => e.content.action)).toEqual(['request']);
    // Delivered: its cancellation is kept. Then the key is requested again, twice, and cancelled
    // again before the device syncs: those three go.
    await send(alice, bob, KEY, cancellation('re'));
    await send(alice, bob, KEY, request('re'));
    await send(alice, bob, KEY, request('re'));
    const before = dropped();
    await send(alice, bob, KEY, cancellation('re'));
    expect(dropped() - before).toBe(3);
    expect((await drain(bob, s.next_batch)).map((e) => e.content.action)).toEqual(['request_cancellation']);
  });

  it('delivers the cancellation of a request a response carried that is not yet acknowledged', async () => {
    const bob = await fresh();
    const before = dropped();
    await send(alice, bob, KEY, request('seen'));
    const s1 = await bob.sync();
    expect(s1.to_device.events.map((e) => e.type)).toEqual([KEY]);
    await send(alice, bob, KEY, cancellation('seen'));
    // The client that got s1 acknowledges it and gets the cancellation.
    const s2 = await bob.sync({ since: s1.next_batch });
    expect(s2.to_device.events).toEqual([{ sender: alice.userId, type: KEY, content: cancellation('seen') }]);
    expect(dropped()).toBe(before);
  });

  it('delivers the cancellation of a request that a woken long-poll carried', async () => {
    const bob = await fresh();
    const s0 = await bob.sync();
    const poll = bob.sync({ since: s0.next_batch, timeout: 10_000 });
    await waitForPoll(bob);
    await send(alice, bob, KEY, request('woken'));
    const s1 = await poll;
    expect(s1.to_device.events.map((e) => e.type)).toEqual([KEY]);
    await send(alice, bob, KEY, cancellation('woken'));
    expect((await drain(bob, s1.next_batch)).map((e) => e.content)).toEqual([cancellation('woken')]);
  });

  it('delivers the cancellation when an earlier request of the same request_id reached the device and was acknowledged', async () => {
    const bob = await fresh();
    await send(alice, bob, KEY, request('again'));
    const s1 = await bob.sync();
    const s2 = await bob.sync({ since: s1.next_batch }); // acknowledged: the row is gone
    expect(s2.to_device.events).toEqual([]);
    // Re-requested with the same request_id (as the spec asks), then cancelled before the device syncs.
    await send(alice, bob, KEY, request('again'));
    const before = dropped();
    await send(alice, bob, KEY, cancellation('again'));
    expect(dropped()).toBe(before);
    expect((await drain(bob, s2.next_batch)).map((e) => e.content.action)).toEqual(['request', 'request_cancellation']);
  });

  it('delivers the cancellation of a request a sliding-sync response carried', async () => {
    const bob = await fresh();
    await send(alice, bob, KEY, request('sliding'));
    const res = await bob.json<{ extensions: { to_device: { events: unknown[]; next_batch: string } } }>(
      'POST',
      '/unstable/org.matrix.simplified_msc3575/sync',
      { extensions: { to_device: { enabled: true } } },
    );
    expect(res.body.extensions.to_device.events).toHaveLength(1);
    const before = dropped();
    await send(alice, bob, KEY, cancellation('sliding'));
    expect(dropped()).toBe(before);
    expect((await drain(bob, res.body.extensions.to_device.next_batch)).map((e) => e.content)).toEqual([cancellation('sliding')]);
  });

  it('leaves requests alone that differ in request_id, requesting device, sender or type', async () => {
    const bob = await fresh();
    const carol = await TestClient.register(t.app, `carol${++n}`, { deviceId: 'ALICEPHONE' });
    const before = dropped() + dropped(SECRET);
    await send(alice, bob, KEY, request('a'));
    await send(alice, bob, KEY, request('b', 'ALICELAPTOP'));
    await send(carol, bob, KEY, request('c'));
    await send(alice, bob, SECRET, request('d', 'ALICEPHONE', SECRET));
    await send(alice, bob, KEY, cancellation('other')); // another request_id
    await send(alice, bob, KEY, cancellation('b')); // another requesting device
    await send(alice, bob, KEY, cancellation('c')); // another sender (carol sent c)
    await send(alice, bob, KEY, cancellation('d')); // another type (d was a secret request)
    const events = await drain(bob);
    expect(events).toHaveLength(8);
    expect(dropped() + dropped(SECRET)).toBe(before);
  });

  it('applies a retried cancellation (same txn id) once', async () => {
    const bob = await fresh();
    const before = dropped();
    await send(alice, bob, KEY, request('retry1'));
    await send(alice, bob, KEY, cancellation('retry1'), 'cancel-retry');
    await send(alice, bob, KEY, request('retry1'));
    // The retry answers as the first did and neither drops the new request nor stores anything.
    await send(alice, bob, KEY, cancellation('retry1'), 'cancel-retry');
    expect(dropped() - before).toBe(2);
    expect((await drain(bob)).map((e) => e.content.action)).toEqual(['request']);
  });

  it('drops per device: `*` reaches one device whose request was delivered and one whose was not', async () => {
    const bob = await fresh();
    const bob2 = await TestClient.login(t.app, bob.userId, { deviceId: 'SECOND' });
    await alice.sendToDevice(KEY, { [bob.userId]: { '*': request('star') } });
    const s1 = await bob.sync(); // only the first device has seen the request
    expect(s1.to_device.events).toHaveLength(1);
    const before = dropped();
    await alice.sendToDevice(KEY, { [bob.userId]: { '*': cancellation('star') } });
    expect(dropped() - before).toBe(2);
    expect(await drain(bob2)).toEqual([]);
    expect((await drain(bob, s1.next_batch)).map((e) => e.content.action)).toEqual(['request_cancellation']);
    // Neither device was counted as unknown.
    expect(t.services.counters.get('to_device_dropped_total', { reason: 'unknown_device' })).toBe(0);
  });

  it('treats a cancellation over federation the same (sender the remote user, requesting_device_id in content)', async () => {
    const bob = await fresh();
    const mallory = `@mallory:${REMOTE}`;
    const before = dropped();
    const edu = (id: string, content: Record<string, unknown>) => ({
      edu_type: 'm.direct_to_device',
      content: { sender: mallory, type: KEY, message_id: id, messages: { [bob.userId]: { [bob.deviceId]: content } } },
    });
    expect((await federationTxn([edu('fed-1', request('fr', 'MALLORYDEV'))])).status).toBe(200);
    // A request and its cancellation in one transaction too.
    expect((await federationTxn([edu('fed-2', cancellation('fr', 'MALLORYDEV')), edu('fed-3', request('fr2', 'MALLORYDEV')), edu('fed-4', cancellation('fr2', 'MALLORYDEV'))])).status).toBe(200);
    // A resent EDU is applied once.
    expect((await federationTxn([edu('fed-2', cancellation('fr', 'MALLORYDEV'))])).status).toBe(200);
    expect(await drain(bob)).toEqual([]);
    expect(dropped() - before).toBe(4);
  });

  it('keeps a cancellation whose request a sync is recording as read meanwhile, and leaves out a request deleted before the record', async () => {
    const bob = await fresh();
    const inbox = new DeviceInboxStore(t.database.db);
    await send(alice, bob, KEY, request('race1'));
    const [r1] = await queuedIds(bob);
    // A sync's recording statement holds its share lock (its transaction is open) while the
    // cancellation arrives: on PostgreSQL the cancellation waits for it, then sees the record.
    let cancelled = false;
    let pending: Promise<void> | undefined;
    await t.database.db.transaction(async (tx) => {
      expect(await new DeviceInboxStore(tx).recordRequestsRead(bob.userId, bob.deviceId, [r1 as number])).toEqual(new Set([r1]));
      pending = send(alice, bob, KEY, cancellation('race1')).then(() => {
        cancelled = true;
      });
      await new Promise((resolve) => setTimeout(resolve, usingPostgres() ? 300 : 20));
      if (usingPostgres()) expect(cancelled).toBe(false);
    });
    await pending;
    expect((await drain(bob)).map((e) => e.content.action)).toEqual(['request', 'request_cancellation']);

    // The other order: a sync read the request, the cancellation removed it, then the sync
    // records what it read: the request is no longer there, so the response leaves it out.
    const carol = await fresh();
    await send(alice, carol, KEY, request('race2'));
    const [r2] = await queuedIds(carol);
    await send(alice, carol, KEY, cancellation('race2'));
    expect(await inbox.recordRequestsRead(carol.userId, carol.deviceId, [r2 as number])).toEqual(new Set());
  });
});

describe('MSC3944 records of delivered requests', () => {
  // Last: maintenance at a time 31 days ahead also forgets every txn id and EDU id.
  it('are forgotten by maintenance after 30 days only once no request of their key is queued', async () => {
    const bob = await fresh();
    await send(alice, bob, KEY, request('kept'));
    await send(alice, bob, KEY, request('forgotten'));
    const s1 = await bob.sync();
    expect(s1.to_device.events).toHaveLength(2);
    // 'forgotten' is acknowledged by hand (the row is gone), 'kept' still queued.
    await queryRows(t.database.db, sql`delete from device_inbox where user_id = ${bob.userId} and content like '%forgotten%'`);
    await t.maintenance.runOnce(Date.now() + 31 * 24 * 3600_000);
    const before = dropped();
    await send(alice, bob, KEY, cancellation('kept'));
    expect(dropped()).toBe(before);
    await send(alice, bob, KEY, request('forgotten'));
    await send(alice, bob, KEY, cancellation('forgotten'));
    expect(dropped() - before).toBe(2);
    expect((await drain(bob, s1.next_batch)).map((e) => e.content)).toEqual([cancellation('kept')]);
  });
});

async function queuedIds(client: TestClient): Promise<number[]> {
  const rows = await queryRows<{ stream_id: string | number }>(
    t.database.db,
    sql`select stream_id from device_inbox where user_id = ${client.userId} and device_id = ${client.deviceId} order by stream_id`,
  );
  return rows.map((r) => Number(r.stream_id));
}

async function waitForPoll(client: TestClient): Promise<void> {
  for (let i = 0; i < 200 && !t.services.notifier.isWaiting(client.userId, client.deviceId); i++) await new Promise((r) => setTimeout(r, 5));
}

let fedTxn = 0;
async function federationTxn(edus: unknown[]): Promise<{ status: number }> {
  const uri = `/_matrix/federation/v1/send/stale${++fedTxn}`;
  const body = { origin: REMOTE, origin_server_ts: Date.now(), pdus: [], edus };
  const res = await t.app.request(uri, {
    method: 'PUT',
    headers: { 'content-type': 'application/json', authorization: fake.authorization('PUT', uri, SERVER_NAME, body) },
    body: JSON.stringify(body),
  });
  return { status: res.status };
}
