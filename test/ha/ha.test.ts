import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../../src/app.ts';
import { parseConfig } from '../../src/config/config.ts';
import { openDatabase, type Database } from '../../src/storage/drivers/database.ts';
import { TestClient } from '../support/client.ts';
import { HaCluster, haSkipReason } from '../support/ha/cluster.ts';

const skip = haSkipReason();
if (skip !== null) console.warn(`test/ha skipped: ${skip}`);

/**
 * Production shapes around PostgreSQL, on a cluster the test starts (test/support/ha/): two
 * server instances (each with its own pool and LISTEN, as two processes) through PgBouncer in
 * transaction mode, then on a multi-host URL while the primary is killed and its synchronous
 * standby promoted.
 */
describe.skipIf(skip !== null)('PgBouncer and failover', () => {
  const cluster = new HaCluster();
  const instances: { app: App; database: Database }[] = [];

  async function instance(opts: { url: string; listenUrl?: string; preparedStatements?: boolean }): Promise<App> {
    const database = await openDatabase({ kind: 'postgres', poolSize: 4, waitTimeoutMs: 2_000, ...opts });
    const app = createApp({ config: parseConfig({ server_name: 'ha.test', rate_limits: { send_to_device: { per_second: 0 } } }), database });
    await app.start();
    instances.push({ app, database });
    return app;
  }

  async function stopInstances(): Promise<void> {
    for (const i of instances.splice(0)) {
      await i.app.stop();
      await i.database.close();
    }
  }

  beforeAll(async () => {
    await cluster.start();
  }, 120_000);

  afterAll(async () => {
    await stopInstances();
    await cluster.stop();
  }, 60_000);

  it('through PgBouncer (listen_url direct): delivers once, wakes across processes, runs transactions', async () => {
    const direct = cluster.url('primary');
    const a = await instance({ url: cluster.url('pgbouncer'), listenUrl: direct, preparedStatements: false });
    const b = await instance({ url: cluster.url('pgbouncer'), listenUrl: direct, preparedStatements: false });
    const alice = await TestClient.register(a.app, 'pgb_alice');
    const bob = await TestClient.register(a.app, 'pgb_bob');
    const bobOnB = new TestClient(b.app, bob.userId, bob.deviceId, bob.token);
    const initial = await bobOnB.sync();
    const polling = bobOnB.sync({ since: initial.next_batch, timeout: 20_000 });
    await new Promise((r) => setTimeout(r, 100));
    const sentAt = Date.now();
    expect((await alice.sendToDevice('m.pgb', { [bob.userId]: { [bob.deviceId]: { n: 0 } } }, 'pgb-0')).status).toBe(200);
    const woken = await polling;
    expect(Date.now() - sentAt).toBeLessThan(1_000);
    expect(woken.to_device.events.map((e) => e.content)).toEqual([{ n: 0 }]);
    // Repeated txnIds through the pooler: stored once.
    for (let n = 1; n <= 20; n++) {
      const messages = { [bob.userId]: { [bob.deviceId]: { n } } };
      expect((await alice.sendToDevice('m.pgb', messages, `pgb-${n}`)).status).toBe(200);
      expect((await alice.sendToDevice('m.pgb', messages, `pgb-${n}`)).status).toBe(200);
    }
    const s = await bobOnB.sync({ since: woken.next_batch });
    expect(s.to_device.events.map((e) => (e.content as { n: number }).n)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    // Endpoints that run explicit transactions.
    for (let i = 0; i < 20; i++) {
      const c = i % 2 === 0 ? alice : new TestClient(b.app, alice.userId, alice.deviceId, alice.token);
      const upload = await c.request('POST', '/v3/keys/upload', { one_time_keys: { [`signed_curve25519:K${i}`]: { key: `k${i}` } } });
      expect(upload.status).toBe(200);
      const rename = await c.request('PUT', `/v3/devices/${encodeURIComponent(alice.deviceId)}`, { display_name: `name ${i}` });
      expect(rename.status).toBe(200);
    }
    await stopInstances();
  }, 60_000);

  it('rides through the primary being killed and the synchronous standby promoted: 200 or 503, nothing lost or duplicated', async () => {
    const a = await instance({ url: cluster.url('both') });
    const b = await instance({ url: cluster.url('both') });
    const apps = [a, b];
    const senders = await Promise.all([0, 1].map((i) => TestClient.register(apps[i]!.app, `fo_sender${i}`)));
    const bob = await TestClient.register(a.app, 'fo_bob');
    const statuses = new Map<number, number>();
    let missingRetryAfter = 0;
    const acknowledged = new Set<number>();
    let stop = false;
    let lastFailure = 0;
    let killedAt = 0;
    // The longest answer to a request sent around or after the kill: a gap the wait timeout absorbed shows here.
    let longestWait = 0;
    const okAt: number[] = [];
    let n = 0;
    const load = async (i: number) => {
      const sender = senders[i]!;
      while (!stop) {
        const m = n++;
        // Retried with the same txnId until acknowledged, as a client would.
        for (;;) {
          const startedAt = Date.now();
          const res = await sender.request('PUT', `/v3/sendToDevice/m.fo/fo-${m}`, { messages: { [bob.userId]: { [bob.deviceId]: { m } } } });
          if (killedAt > 0 && startedAt >= killedAt - 50) longestWait = Math.max(longestWait, Date.now() - startedAt);
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          if (res.status === 503 && res.headers.get('retry-after') === null) missingRetryAfter++;
          await res.body?.cancel();
          if (res.status === 200) {
            acknowledged.add(m);
            okAt.push(Date.now());
            break;
          }
          lastFailure = Date.now();
          if (stop) return;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    };
    const loops = [load(0), load(1), load(0), load(1)];
    await new Promise((r) => setTimeout(r, 2_000));
    killedAt = Date.now();
    await cluster.script('primary-standby.sh', 'kill-primary');
    await new Promise((r) => setTimeout(r, 1_000));
    const promoteAt = Date.now();
    await cluster.script('primary-standby.sh', 'promote');
    const promotedAt = Date.now();
    await new Promise((r) => setTimeout(r, 6_000));
    stop = true;
    await Promise.all(loops);

    // Everything acknowledged is on the promoted standby, once each.
    const received: number[] = [];
    let since: string | null = null;
    for (;;) {
      const s = await bob.sync({ since, timeout: 0 });
      received.push(...s.to_device.events.map((e) => (e.content as { m: number }).m));
      if (s.to_device.events.length === 0 && since !== null) break;
      since = s.next_batch;
    }
    // Sends succeed again: the first acknowledgement after the last failed answer.
    const recoveredAt = okAt.find((t) => t > Math.max(lastFailure, killedAt)) ?? 0;
    const lost = [...acknowledged].filter((m) => !received.includes(m));
    const duplicates = received.length - new Set(received).size;
    console.warn(
      `failover: statuses ${JSON.stringify(Object.fromEntries(statuses))}, acknowledged ${acknowledged.size}, lost ${lost.length}, duplicated ${duplicates}, ` +
        `kill→promote ${promoteAt - killedAt} ms, promote took ${promotedAt - promoteAt} ms, ${lastFailure > killedAt ? `last failure ${lastFailure - promotedAt} ms after promotion, ` : 'no failed answers, '}sends succeeded again ${recoveredAt - promotedAt} ms after promotion (negative: answers to sends committed before the kill); ` +
        `the longest answer to a send made around or after the kill took ${longestWait} ms`,
    );
    expect([...statuses.keys()].filter((s) => s !== 200 && s !== 503)).toEqual([]);
    expect(missingRetryAfter).toBe(0);
    expect(lost).toEqual([]);
    expect(duplicates).toBe(0);
    expect(recoveredAt).toBeGreaterThan(0);

    // Wake-ups across the two instances work on the new primary.
    const bobOnB = new TestClient(b.app, bob.userId, bob.deviceId, bob.token);
    const initial = await bobOnB.sync({ since });
    const polling = bobOnB.sync({ since: initial.next_batch, timeout: 25_000 });
    await new Promise((r) => setTimeout(r, 100));
    const sentAt = Date.now();
    expect((await senders[0]!.sendToDevice('m.fo', { [bob.userId]: { [bob.deviceId]: { m: -1 } } }, 'fo-after')).status).toBe(200);
    const woken = await polling;
    console.warn(`failover: a long-poll on the other instance woke ${Date.now() - sentAt} ms after the send`);
    expect(woken.to_device.events.map((e) => e.content)).toEqual([{ m: -1 }]);
    expect((await a.app.request('/health/ready')).status).toBe(200);
  }, 90_000);
});
