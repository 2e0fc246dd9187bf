import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/storage/drivers/database.ts';
import { queueLeases } from '../src/storage/schema.ts';
import { overHttp, TestClient } from './support/client.ts';
import { freePort, ServerProcess } from './support/server-process.ts';

/**
 * SIGTERM while a federation queue is being sent: the process gives its lease up before it
 * closes the database, so the next process sends the queue at once (not after the lease's 45 s
 * expiry), and nothing is logged as failing.
 */
let peer: Server;
let peerUrl = '';
const received: number[] = [];
let server: ServerProcess;

beforeAll(async () => {
  // A remote server that takes 20 ms per transaction: the sender is always mid-step.
  peer = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method === 'GET' && req.url === '/_matrix/federation/v1/version') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"server":{"name":"slow-peer","version":"1"}}');
        return;
      }
      setTimeout(() => {
        const body = JSON.parse(Buffer.concat(chunks).toString()) as { edus: { content: { messages: Record<string, Record<string, { n: number }>> } }[] };
        for (const e of body.edus) for (const byDevice of Object.values(e.content.messages)) for (const c of Object.values(byDevice)) received.push(c.n);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"pdus":{}}');
      }, 20);
    });
  });
  await new Promise<void>((resolve) => peer.listen(0, '127.0.0.1', resolve));
  peerUrl = `http://127.0.0.1:${(peer.address() as AddressInfo).port}`;
  server = await ServerProcess.create('leases.test', await freePort(), {
    federation: { allow_http: true, static_routes: { 'peer.test': peerUrl }, backoff_initial_ms: 50, backoff_max_ms: 200 },
    rate_limits: { send_to_device: { per_second: 0 } },
  });
  await server.start();
}, 90_000);

afterAll(async () => {
  await server?.destroy();
  await new Promise<void>((resolve) => (peer === undefined ? resolve() : peer.close(() => resolve())));
});

async function leaseRows(): Promise<{ queue: string; holder: string }[]> {
  if (server.databaseUrl !== null) {
    const sql = postgres(server.databaseUrl, { max: 1, onnotice: () => {} });
    try {
      return await sql<{ queue: string; holder: string }[]>`select queue, holder from queue_leases`;
    } finally {
      await sql.end();
    }
  }
  const database = await openDatabase({ kind: 'pglite', dataDir: server.pgliteDir });
  try {
    return await database.db.select({ queue: queueLeases.queue, holder: queueLeases.holder }).from(queueLeases);
  } finally {
    await database.close();
  }
}

describe('shutdown with a federation queue active', () => {
  it('releases the lease before closing the database; the next process sends the rest at once', async () => {
    const alice = await TestClient.register(overHttp(server.baseUrl), 'alice');
    // 40 messages of ~40 KB: one transaction each (EDUs are packed to ≤ 64 KiB), ~1 s of sending.
    const total = 40;
    for (let n = 0; n < total; n++) {
      expect((await alice.sendToDevice('m.queued', { '@u:peer.test': { D: { n, pad: 'x'.repeat(40_000) } } })).status).toBe(200);
    }
    const deadline = Date.now() + 20_000;
    while (received.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(received.length).toBeGreaterThanOrEqual(3);
    expect(received.length).toBeLessThan(total);

    expect(await server.stop('SIGTERM')).toBe(0);
    expect(server.stderr).not.toMatch(/lease[s]? failed|shutdown failed/);
    expect(server.stderr).toContain('"msg":"stopped"');
    expect(await leaseRows()).toEqual([]);

    const restartedAt = Date.now();
    await server.start();
    while (new Set(received).size < total && Date.now() - restartedAt < 30_000) await new Promise((r) => setTimeout(r, 50));
    expect(new Set(received).size).toBe(total);
    // At once: 45 s would be the lease expiry; sending what is left takes ~4 s at most.
    expect(Date.now() - restartedAt).toBeLessThan(15_000);
  }, 90_000);
});
