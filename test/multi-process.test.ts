import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../src/app.ts';
import { parseConfig } from '../src/config/config.ts';
import { loadOwnSigningKey } from '../src/federation/own-signing-key.ts';
import { openDatabase, type Database } from '../src/storage/drivers/database.ts';
import { QueueLeaseStore } from '../src/storage/queue-lease-store.ts';
import { TestClient } from './support/client.ts';
import { createPostgresDatabaseUrl, usingPostgres } from './support/test-database.ts';

/**
 * Several server instances on one PostgreSQL database, as several processes would be (each
 * with its own pool, notifier and senders). PGlite is single-process, so this runs on
 * PostgreSQL only (TEST_DATABASE_URL).
 */
describe.skipIf(!usingPostgres())('several processes on one PostgreSQL', () => {
  let pg: { url: string; drop(): Promise<void> };
  const instances: { app: App; database: Database }[] = [];
  let peer: Server;
  let peerUrl = '';
  const received: { txnId: string; body: { edus: { content: { messages: Record<string, Record<string, { n: number }>> } }[] } }[] = [];
  let inFlight = 0;
  let maxInFlight = 0;

  async function instance(): Promise<App> {
    const database = await openDatabase({ kind: 'postgres', url: pg.url, poolSize: 5 });
    const app = createApp({
      config: parseConfig({
        server_name: 'shared.test',
        federation: { allow_http: true, static_routes: { 'peer.test': peerUrl }, backoff_initial_ms: 50, backoff_max_ms: 200 },
      }),
      database,
      signingKey: await loadOwnSigningKey(database.db),
    });
    await app.start();
    instances.push({ app, database });
    return app;
  }

  beforeAll(async () => {
    pg = (await createPostgresDatabaseUrl()) as { url: string; drop(): Promise<void> };
    // A remote server that counts overlapping transactions and accepts everything.
    peer = createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/_matrix/federation/v1/version') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"server":{"name":"counting-peer","version":"1"}}');
        return;
      }
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        setTimeout(() => {
          received.push({ txnId: req.url ?? '', body: JSON.parse(Buffer.concat(chunks).toString()) as (typeof received)[number]['body'] });
          inFlight--;
          res.writeHead(200, { 'content-type': 'application/json' }).end('{"pdus":{}}');
        }, 30);
      });
    });
    await new Promise<void>((resolve) => peer.listen(0, '127.0.0.1', resolve));
    peerUrl = `http://127.0.0.1:${(peer.address() as AddressInfo).port}`;
  }, 60_000);

  afterAll(async () => {
    for (const i of instances) {
      await i.app.stop();
      await i.database.close();
    }
    await new Promise<void>((resolve) => peer?.close(() => resolve()));
    await pg?.drop();
  });

  it('wakes a long-poll on one process within milliseconds when another stores the message', async () => {
    const a = await instance();
    const b = await instance();
    const sender = await TestClient.register(a.app, 'sender');
    const bob = await TestClient.register(a.app, 'bob');
    const bobOnB = new TestClient(b.app, bob.userId, bob.deviceId, bob.token);
    const initial = await bobOnB.sync();
    const polling = bobOnB.sync({ since: initial.next_batch, timeout: 20_000 });
    await new Promise((r) => setTimeout(r, 100));
    const sentAt = Date.now();
    await sender.sendToDevice('m.cross', { [bob.userId]: { [bob.deviceId]: { hello: 'from A' } } });
    const s = await polling;
    const wokeAfter = Date.now() - sentAt;
    expect(s.to_device.events).toEqual([{ sender: sender.userId, type: 'm.cross', content: { hello: 'from A' } }]);
    expect(wokeAfter).toBeLessThan(1_000);
  });

  it('wakes the long-polls on another process of every device a "*" send reaches (the send statement\'s own NOTIFY)', async () => {
    const [a, b] = instances.map((i) => i.app.app) as [App['app'], App['app']];
    const sender = await TestClient.register(a, 'star_sender');
    const carol = await TestClient.register(a, 'star_carol');
    const carolOnB = new TestClient(b, carol.userId, carol.deviceId, carol.token);
    const initial = await carolOnB.sync();
    const polling = carolOnB.sync({ since: initial.next_batch, timeout: 20_000 });
    await new Promise((r) => setTimeout(r, 100));
    const sentAt = Date.now();
    expect((await sender.sendToDevice('m.star', { [carol.userId]: { '*': { to: 'all' } } })).status).toBe(200);
    const s = await polling;
    expect(s.to_device.events).toEqual([{ sender: sender.userId, type: 'm.star', content: { to: 'all' } }]);
    expect(Date.now() - sentAt).toBeLessThan(1_000);
  });

  it('stops accepting a token on every process once it is logged out on one', async () => {
    const [a, b] = instances.map((i) => i.app.app) as [App['app'], App['app']];
    const onA = await TestClient.register(a, 'revoked');
    const onB = new TestClient(b, onA.userId, onA.deviceId, onA.token);
    expect((await onB.request('GET', '/v3/account/whoami')).status).toBe(200);
    expect((await onA.request('POST', '/v3/logout')).status).toBe(200);
    const deadline = Date.now() + 2_000;
    let status = 200;
    while (status === 200 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      status = (await onB.request('GET', '/v3/account/whoami')).status;
    }
    expect(status).toBe(401);
  });

  it('never sends one destination from two processes at once, and delivers every message once', async () => {
    const [a, b] = instances.map((i) => i.app.app);
    const onA = await TestClient.register(a as App['app'], 'fanner_a');
    const onB = await TestClient.register(b as App['app'], 'fanner_b');
    await Promise.all(
      Array.from({ length: 40 }, (_, n) =>
        (n % 2 === 0 ? onA : onB).sendToDevice('m.multi', { '@remote:peer.test': { [`D${n}`]: { n } } }),
      ),
    );
    const deadline = Date.now() + 15_000;
    const seen = () => received.flatMap((t) => t.body.edus.flatMap((e) => Object.values(e.content.messages['@remote:peer.test'] ?? {}).map((m) => m.n)));
    while (seen().length < 40 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(seen().sort((x, y) => x - y)).toEqual(Array.from({ length: 40 }, (_, n) => n));
    expect(maxInFlight).toBe(1);
  });

  it('takes over the queue of a process that died holding it, once its lease expires', async () => {
    const a = instances[0] as { app: App; database: Database };
    const u = await TestClient.register(a.app.app, 'orphaned');
    // A dead process's lease: never renewed, expiring in 1.5 s.
    const started = Date.now();
    await new QueueLeaseStore(a.database.db).acquire('federation:peer.test', 'dead-process', 1_500, Date.now());
    const before = received.length;
    await u.sendToDevice('m.orphan', { '@remote:peer.test': { X: { n: 999 } } });
    const deadline = Date.now() + 15_000;
    while (received.length === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(received.length).toBeGreaterThan(before);
    // Not before the dead holder's lease ran out.
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_400);
  });
});
