/**
 * What durable PGlite costs: sendToDevice over real HTTP on a PGlite data directory, with fsync
 * on every commit (the default) and off (PGlite's own default). Sequential requests (one client,
 * one at a time: each pays its commit's fsync) and 16 concurrent ones.
 *
 *   node --import tsx test/bench/pglite-fsync.ts [requests]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { createApp } from '../../src/app.ts';
import { parseConfig } from '../../src/config/config.ts';
import { openDatabase } from '../../src/storage/drivers/database.ts';
import { HttpClient } from './http-client.ts';

const N = Number(process.argv[2] ?? 1000);

async function run(fsync: boolean): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tds-fsync-'));
  const database = await openDatabase({ kind: 'pglite', dataDir: join(dir, 'pglite'), fsync });
  const built = createApp({ config: parseConfig({ server_name: 'bench.test', rate_limits: { send_to_device: { per_second: 0 } } }), database });
  await built.start();
  const server = serve({ fetch: built.app.fetch, hostname: '127.0.0.1', port: 0 });
  await new Promise((r) => server.once('listening', r));
  const client = new HttpClient('127.0.0.1', (server.address() as AddressInfo).port);
  const reg = async (u: string) =>
    (await client.request<{ access_token: string; device_id: string; user_id: string }>('POST', '/_matrix/client/v3/register', { body: { username: u, password: 'pw', auth: { type: 'm.login.dummy' } } })).body;
  const alice = await reg('alice');
  const bob = await reg('bob');
  let txn = 0;
  const send = async () => {
    const res = await client.request('PUT', `/_matrix/client/v3/sendToDevice/m.bench/${txn++}`, {
      token: alice.access_token,
      body: { messages: { [bob.user_id]: { [bob.device_id]: { ciphertext: 'x'.repeat(500) } } } },
    });
    if (res.status !== 200) throw new Error(`status ${res.status}`);
  };
  for (let i = 0; i < 50; i++) await send(); // warm-up
  const lat: number[] = [];
  let t0 = performance.now();
  for (let i = 0; i < N; i++) {
    const s = performance.now();
    await send();
    lat.push(performance.now() - s);
  }
  const seq = N / ((performance.now() - t0) / 1000);
  lat.sort((a, b) => a - b);
  t0 = performance.now();
  let left = N;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (left-- > 0) await send();
  }));
  const conc = N / ((performance.now() - t0) / 1000);
  console.log(
    `fsync ${fsync ? 'on ' : 'off'}: sequential ${seq.toFixed(0)} req/s (p50 ${lat[Math.floor(N * 0.5)]?.toFixed(2)} ms, p99 ${lat[Math.floor(N * 0.99)]?.toFixed(2)} ms); 16 concurrent ${conc.toFixed(0)} req/s`,
  );
  client.agent.destroy();
  await new Promise((r) => server.close(r));
  await built.stop();
  await database.close();
  rmSync(dir, { recursive: true, force: true });
}

const modes = process.env.FSYNC_MODES === undefined ? [false, true, false, true] : process.env.FSYNC_MODES.split(",").map((m) => m === "on");
for (const fsync of modes) await run(fsync);
