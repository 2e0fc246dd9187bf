import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mls from '../handlers/mls/index.ts';
import type { HandlerModule } from '../src/sdk/define-handler.ts';
import { overHttp, TestClient, type ToDeviceEventJson } from './support/client.ts';
import { mlsClaim, MlsMember, T } from './support/mls-member.ts';
import { serveOverHttp } from './support/http-server.ts';
import { freePort } from './support/server-process.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

/**
 * Two servers of ours, a.test and b.test, federating over real HTTP, both with the mls module:
 * a claim of a b.test user's KeyPackage from a.test (the mls object travels and is matched on
 * b.test), and a group run by @:a.test with a b.test member committing over federation.
 */
let a: TestApp;
let b: TestApp;
let aHttp: { baseUrl: string; close(): Promise<void> };
let bHttp: { baseUrl: string; close(): Promise<void> };
const SUITE_3 = 'MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519';

beforeAll(async () => {
  const [pa, pb] = await Promise.all([freePort(), freePort()]);
  const routes = { 'a.test': `http://127.0.0.1:${pa}`, 'b.test': `http://127.0.0.1:${pb}` };
  const fed = (name: string) => ({ server_name: name, rate_limits: { keys_claim: { per_second: 0 } }, federation: { allow_http: true, static_routes: routes, backoff_initial_ms: 50, backoff_max_ms: 200 } });
  const handlers = [{ module: mls as HandlerModule<unknown> }];
  [a, b] = await Promise.all([startTestApp(fed('a.test'), handlers), startTestApp(fed('b.test'), handlers)]);
  [aHttp, bHttp] = await Promise.all([serveOverHttp(a, pa), serveOverHttp(b, pb)]);
}, 60_000);

afterAll(async () => {
  await Promise.all([aHttp?.close(), bHttp?.close()]);
  await Promise.all([a?.close(), b?.close()]);
});

/** What arrives in a member's inbox, until `count` events or 20 s. */
async function takeUntil(m: MlsMember, count: number): Promise<ToDeviceEventJson[]> {
  const events: ToDeviceEventJson[] = [];
  for (const deadline = Date.now() + 20_000; events.length < count && Date.now() < deadline; ) {
    events.push(...(await m.inbox.take()));
    if (events.length < count) await new Promise((r) => setTimeout(r, 50));
  }
  return events;
}

describe('MLS across two of our servers', () => {
  it('claims a remote user\'s KeyPackage with the mls object matched there, and runs a group with a remote member committing', async () => {
    const alice = await MlsMember.of(await TestClient.register(overHttp(aHttp.baseUrl), 'alice'));
    const bob = await MlsMember.of(await TestClient.register(overHttp(bHttp.baseUrl), 'bob'), { serverUser: '@:a.test' });
    await bob.uploadKeyPackages(1);

    // The mls object goes with the claim to b.test and is matched there: no package of suite 3.
    expect(await alice.claim(bob.client.userId, [bob.client.deviceId], mlsClaim([SUITE_3]))).toEqual({});
    const claimed = await alice.claim(bob.client.userId, [bob.client.deviceId], mlsClaim());
    expect(Object.keys(claimed)).toEqual([bob.client.deviceId]);
    expect(((await bob.client.sync()) as unknown as { device_one_time_keys_count: Record<string, number> }).device_one_time_keys_count.mls).toBeUndefined();

    await alice.mls.createGroup(randomBytes(16));
    const created = await alice.mls.commit([claimed[bob.client.deviceId]?.keyPackage ?? '']);
    expect(await alice.ask(T.message, { message: created.message, commit_info: { welcome: created.welcome, added: [bob.ref] } })).toMatchObject([
      { type: T.commit, content: { epoch: 1 } },
    ]);
    alice.mls.apply(created);
    const [welcome] = await takeUntil(bob, 1);
    expect(welcome).toMatchObject({ sender: '@:a.test', type: T.welcome });
    await bob.mls.join(String(welcome?.content.welcome));

    // Bob's commit reaches @:a.test over federation, without a sending device: he names it.
    const bobs = await bob.mls.commit();
    expect(await bob.send(T.message, { message: bobs.message, device_id: bob.client.deviceId, request_id: 'b1' })).toBe(200);
    const [own] = await takeUntil(bob, 1);
    expect(own).toMatchObject({ sender: '@:a.test', type: T.commit, content: { epoch: 2, request_id: 'b1', sender: bob.ref } });
    bob.mls.apply(bobs);
    const [toAlice] = await takeUntil(alice, 1);
    expect(toAlice).toMatchObject({ type: T.commit, content: { epoch: 2, sender: bob.ref } });
    await alice.mls.receive(String(toAlice?.content.message));

    // Without naming his device, the DS cannot tell which member commits: refused, to all his devices.
    const second = await bob.mls.commit();
    await bob.send(T.message, { message: second.message });
    expect(await takeUntil(bob, 1)).toMatchObject([{ type: T.rejected, content: { reason: 'unknown_device' } }]);
    expect([alice.mls.epoch, bob.mls.epoch]).toEqual([2, 2]);
  }, 60_000);
});
