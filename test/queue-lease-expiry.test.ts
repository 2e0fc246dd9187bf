import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QueueLeaseStore } from '../src/storage/queue-lease-store.ts';
import { TestClock } from '../src/testing/test-clock.ts';
import { TestClient } from './support/client.ts';
import { FakeServer } from './support/fake-server.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

/**
 * A queue whose lease a dead process holds is taken over once the lease expires, not before:
 * on the server's clock, which the test moves (the wait for the peer's answers stays real).
 * test/multi-process.test.ts shows the same across two instances on PostgreSQL, in real time.
 */
const clock = new TestClock();
const peer = new FakeServer('peer.test');
const transactions: unknown[] = [];
let t: TestApp;

beforeAll(async () => {
  await peer.start();
  peer.answer = (method, url, body) => {
    if (method === 'GET' && url === '/_matrix/federation/v1/version') return { status: 200, json: { server: { name: 'fake', version: '1' } } };
    if (method === 'PUT' && url.startsWith('/_matrix/federation/v1/send/')) {
      transactions.push(body);
      return { status: 200, json: { pdus: {} } };
    }
    return null;
  };
  t = await startTestApp({ federation: { allow_http: true, static_routes: { 'peer.test': peer.baseUrl } } }, undefined, { clock });
});
afterAll(async () => {
  await t?.close();
  await peer.stop();
});

/** Real time: until the sender has looked at the queue and set its next look on the clock. */
async function untilRetryScheduled(): Promise<void> {
  for (const until = Date.now() + 15_000; clock.pending === 0; ) {
    if (Date.now() > until) throw new Error('the sender set no retry');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('queue leases', () => {
  it('takes over the queue of a process that died holding it once its lease expires, and not before', async () => {
    // A dead process's lease: never renewed, expiring 1.5 s on.
    expect(await new QueueLeaseStore(t.database.db).acquire('federation:peer.test', 'dead-process', 1_500, clock.now())).toBe(true);
    const u = await TestClient.register(t.app, 'orphaned');
    // Nothing else of the server's is on the clock: a pending timer below is the sender's retry.
    expect(clock.pending).toBe(0);
    await u.sendToDevice('m.orphan', { '@remote:peer.test': { X: { n: 999 } } });
    // Found taken: looked at again 1 s on (queueLease's retryMs), still taken at 1 s.
    await untilRetryScheduled();
    await clock.advance(1_000);
    await untilRetryScheduled();
    expect(transactions).toEqual([]);
    // At 2 s the lease has expired: taken over and sent.
    await clock.advance(1_000);
    for (const until = Date.now() + 15_000; transactions.length === 0 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 10));
    expect(JSON.stringify(transactions)).toContain('"n":999');
  });
});
