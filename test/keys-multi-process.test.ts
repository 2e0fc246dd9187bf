import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { overHttp, TestClient } from './support/client.ts';
import { deviceKeysFor, oneTimeKeys } from './support/e2ee-keys.ts';
import { freePort, ServerProcess } from './support/server-process.ts';
import { usingPostgres } from './support/test-database.ts';

/**
 * Two server processes on one PostgreSQL database, as a deployment behind a load balancer runs
 * them: one-time keys claimed through both at once go out at most once each, and a key upload
 * on one process is seen in the other's /sync counts and device lists. PostgreSQL only (PGlite
 * is one process).
 */
describe.skipIf(!usingPostgres())('keys across two processes on one PostgreSQL', () => {
  let a: ServerProcess;
  let b: ServerProcess;

  beforeAll(async () => {
    const config = { rate_limits: { keys_claim: { per_second: 0 } }, handlers: [], metrics: { enabled: false } };
    a = await ServerProcess.create('keys.test', await freePort(), config);
    await a.start();
    b = ServerProcess.sharing(a, await freePort());
    await b.start();
  }, 120_000);

  afterAll(async () => {
    await b?.destroy();
    await a?.destroy();
  });

  it('hands each one-time key to one claimer only, with 200 claims racing through both processes', async () => {
    const viaA = overHttp(a.baseUrl);
    const viaB = overHttp(b.baseUrl);
    const owner = await TestClient.register(viaA, 'owner', { deviceId: 'OWNER1' });
    const { keys, key } = deviceKeysFor(owner.userId, 'OWNER1');
    const upload = await owner.json('POST', '/v3/keys/upload', { device_keys: keys, one_time_keys: oneTimeKeys(owner.userId, key, 150) });
    expect(upload.status).toBe(200);
    // B caches the owner's counts now; claims made through A are not announced to B, so B's
    // entry must expire (1 s) for the owner to see them there.
    const ownerOnB = new TestClient(viaB, owner.userId, owner.deviceId, owner.token);
    expect((await ownerOnB.sync()).device_one_time_keys_count).toEqual({ signed_curve25519: 150 });
    const claimers = await Promise.all(Array.from({ length: 8 }, (_, i) => TestClient.register(i % 2 === 0 ? viaA : viaB, `claimer${i}`)));
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        (claimers[i % claimers.length] as TestClient).json<{ one_time_keys: Record<string, Record<string, Record<string, unknown>>> }>('POST', '/v3/keys/claim', {
          one_time_keys: { [owner.userId]: { OWNER1: 'signed_curve25519' } },
        }),
      ),
    );
    expect(results.every((r) => r.status === 200)).toBe(true);
    const ids = results.flatMap((r) => Object.keys(r.body.one_time_keys[owner.userId]?.OWNER1 ?? {}));
    // No fallback key was uploaded: 150 keys for 200 claims, each key once, the rest empty.
    expect(ids).toHaveLength(150);
    expect(new Set(ids).size).toBe(150);
    // The owner, syncing through B, sees none left once B's cached counts (1 s) expired.
    await new Promise((r) => setTimeout(r, 1_100));
    const sync = await ownerOnB.sync();
    expect(sync.device_one_time_keys_count).toEqual({ signed_curve25519: 0 });
  });

  it("wakes a long-poll on one process when a tracked user's device appears through the other", async () => {
    const viaA = overHttp(a.baseUrl);
    const viaB = overHttp(b.baseUrl);
    const watcher = await TestClient.register(viaA, 'watcher');
    const target = await TestClient.register(viaB, 'target', { deviceId: 'T1' });
    expect((await watcher.json('POST', '/v3/keys/query', { device_keys: { [target.userId]: [] } })).status).toBe(200);
    const start = await watcher.sync();
    const poll = watcher.sync({ since: start.next_batch, timeout: 20_000 });
    const t2 = await TestClient.login(viaB, 'target', { deviceId: 'T2' });
    const began = Date.now();
    await t2.json('POST', '/v3/keys/upload', { device_keys: deviceKeysFor(target.userId, 'T2').keys });
    const woken = await poll;
    expect(woken.device_lists).toEqual({ changed: [target.userId], left: [] });
    expect(Date.now() - began).toBeLessThan(10_000);
  });
});
