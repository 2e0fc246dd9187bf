/**
 * K1 and K2: the E2EE key endpoints (issue 26) on PostgreSQL, one product server on a fresh
 * database (claims not rate limited: a benchmark measures capacity).
 *
 * K1: `/keys/claim` of one key per request at 32 connections, every request claiming from the
 * same device (the worst case: all claimers contend for one device's keys), judged against F2 at
 * the same concurrency (target ≥ 0.5 ×). The device holds more one-time keys than the run can
 * claim, so every answer is a one-time key, never the fallback.
 *
 * K2: `/keys/query` of one user with 100 devices, each with signed device keys; serial requests
 * on one connection, p50 and p99 reported (no target), beside F2's serial PUT p50.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { encodeBase64 } from '../../src/shared/base64.ts';
import { signingKeyFromSeed } from '../../src/shared/ed25519.ts';
import { signatureOf } from '../../src/federation/json-signing.ts';
import { HttpClient, pool, summarize } from './http-client.ts';
import { CLIENT, PASSWORD, type BenchContext, type BenchRow, type BenchServer, type Device, atLeast, failedRow, fmt, ms, register, startConfiguredServer } from './scenario-support.ts';

const SERVER_NAME = 'keys.bench.local';
const CONNECTIONS = 32;
const SECONDS = Number(process.env.BENCH_SECONDS || 10);
const WARMUP_SECONDS = 3;
/** More than K1 can claim here (the product's fastest figure times the whole run, with room). */
const K1_KEYS = Number(process.env.BENCH_K1_KEYS || 200_000);
const K2_DEVICES = 100;
const K2_ROUNDS = 1000;
const TARGET_CLAIM_F2 = 0.5;

export async function keysScenario(ctx: BenchContext, which: { claim: boolean; query: boolean }): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const dbName = `tds_bench_keys_${randomBytes(4).toString('hex')}`;
  let server: BenchServer | null = null;
  let c: HttpClient | null = null;
  try {
    const url = await ctx.createDatabase(dbName);
    server = await startConfiguredServer(ctx, 'product-keys', { serverName: SERVER_NAME, databaseUrl: url, config: { rate_limits: { send_to_device: { per_second: 0 }, keys_claim: { per_second: 0 } }, handlers: [] } });
    c = new HttpClient('127.0.0.1', server.port, 16);
    if (which.claim) {
      try {
        rows.push(await claimRow(ctx, c, server));
      } catch (e) {
        rows.push(failedRow('K1', '/keys/claim', e));
      }
    }
    if (which.query) {
      try {
        rows.push(await queryRow(ctx, c));
      } catch (e) {
        rows.push(failedRow('K2', '/keys/query', e));
      }
    }
  } finally {
    c?.close();
    if (server !== null) await ctx.stopServer(server);
    await ctx.dropDatabase(dbName);
  }
  return rows;
}

async function claimRow(ctx: BenchContext, c: HttpClient, server: BenchServer): Promise<BenchRow> {
  const owner = await register(c, 'owner', 'OWNERDEV');
  const claimer = await register(c, 'claimer');
  ctx.log(`K1: uploading ${fmt(K1_KEYS)} one-time keys for one device`);
  const t0 = performance.now();
  // The server does not verify one-time key signatures (clients do), so a placeholder signs them.
  const signature = encodeBase64(randomBytes(64));
  await pool(Math.ceil(K1_KEYS / 1000), 4, async (batch) => {
    const keys: Record<string, unknown> = {};
    for (let i = batch * 1000; i < Math.min(K1_KEYS, (batch + 1) * 1000); i++) {
      keys[`signed_curve25519:K${String(i).padStart(7, '0')}`] = { key: encodeBase64(randomBytes(32)), signatures: { [owner.userId]: { 'ed25519:OWNERDEV': signature } } };
    }
    await c.ok('POST', `${CLIENT}/keys/upload`, { token: owner.token, body: { one_time_keys: keys } });
  });
  ctx.notes.push(`K1 setup: ${fmt(K1_KEYS)} one-time keys uploaded in batches of 1,000 in ${fmt((performance.now() - t0) / 1000, 1)} s.`);
  ctx.log(`K1: /keys/claim, one key per request, ${CONNECTIONS} connections, ${SECONDS} s`);
  const r = await ctx.runLoad({
    url: `http://127.0.0.1:${server.port}`,
    method: 'POST',
    pathPrefix: `${CLIENT}/keys/claim`,
    fixedPath: true,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${claimer.token}` },
    body: JSON.stringify({ one_time_keys: { [owner.userId]: { OWNERDEV: 'signed_curve25519' } } }),
    connections: CONNECTIONS,
    warmupSeconds: WARMUP_SECONDS,
    durationSeconds: SECONDS,
  });
  const left = await c.ok<{ one_time_key_counts: Record<string, number> }>('POST', `${CLIENT}/keys/upload`, { token: owner.token, body: {} });
  const claimed = K1_KEYS - (left.one_time_key_counts.signed_curve25519 ?? 0);
  const f2 = ctx.references.f2ReqPerSec;
  return {
    id: 'K1',
    scenario: `/keys/claim, one one-time key per request, all from one device, ${CONNECTIONS} connections`,
    figure: `${fmt(r.reqPerSec)} req/s; p50 ${ms(r.p50)}, p99 ${ms(r.p99)}; ${fmt(claimed)} keys claimed, each once (${fmt(r.non2xx)} non-2xx)`,
    floor: f2 === null ? '—' : `F2 ${fmt(f2)} req/s (${CONNECTIONS} connections)`,
    // autocannon does not count answers still in flight when its warm-up and measured runs end
    // (up to one per connection each), so up to 2 × 32 more keys may be gone than answers counted.
    ...(r.non2xx > 0 || claimed < r.ok2xx || claimed > r.ok2xx + 2 * CONNECTIONS
      ? { ratio: `${r.non2xx} failed requests, or answers (${fmt(r.ok2xx)}) and keys gone (${fmt(claimed)}) disagree`, verdict: 'MISS' as const }
      : atLeast(r.reqPerSec, TARGET_CLAIM_F2, f2, 'F2')),
  };
}

async function queryRow(ctx: BenchContext, c: HttpClient): Promise<BenchRow> {
  ctx.log(`K2: one user with ${K2_DEVICES} devices, each uploading signed device keys`);
  const target = await register(c, 'many');
  const devices: Device[] = [target];
  await pool(K2_DEVICES - 1, 8, async () => {
    const body = await c.ok<{ user_id: string; device_id: string; access_token: string }>('POST', `${CLIENT}/login`, {
      body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'many' }, password: PASSWORD },
    });
    devices.push({ userId: body.user_id, deviceId: body.device_id, token: body.access_token, since: 'v1.0' });
  });
  for (const d of devices) await c.ok('POST', `${CLIENT}/keys/upload`, { token: d.token, body: { device_keys: signedDeviceKeys(d) } });
  const asker = await register(c, 'asker');
  const body = { device_keys: { [target.userId]: [] } };
  const samples: number[] = [];
  for (let i = 0; i < K2_ROUNDS + 50; i++) {
    const t0 = performance.now();
    const answer = await c.ok<{ device_keys: Record<string, Record<string, unknown>> }>('POST', `${CLIENT}/keys/query`, { token: asker.token, body });
    if (i >= 50) samples.push(performance.now() - t0);
    if (i === 0 && Object.keys(answer.device_keys[target.userId] ?? {}).length !== K2_DEVICES) throw new Error('K2: the query did not return every device');
  }
  const s = summarize(samples);
  const f2 = ctx.references.f2SerialP50Ms;
  return {
    id: 'K2',
    scenario: `/keys/query of one user with ${K2_DEVICES} devices (signed device keys), ${fmt(K2_ROUNDS)} serial requests on one connection`,
    figure: `p50 ${ms(s.p50)}, p99 ${ms(s.p99)}`,
    floor: f2 === null ? '—' : `F2 serial PUT p50 ${ms(f2)}`,
    ratio: f2 === null ? 'reported (no target)' : `p50 ${fmt(s.p50 / f2, 1)} × F2 serial p50 (reported, no target)`,
    verdict: 'info',
  };
}

function signedDeviceKeys(d: Device): Record<string, unknown> {
  const key = signingKeyFromSeed(`ed25519:${d.deviceId}`, randomBytes(32));
  const keys = {
    user_id: d.userId,
    device_id: d.deviceId,
    algorithms: ['m.olm.v1.curve25519-aes-sha2', 'm.megolm.v1.aes-sha2'],
    keys: { [`ed25519:${d.deviceId}`]: encodeBase64(key.publicKey), [`curve25519:${d.deviceId}`]: encodeBase64(randomBytes(32)) },
  };
  return { ...keys, signatures: { [d.userId]: { [key.keyId]: signatureOf(keys, key) } } };
}
