import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mls from '../handlers/mls/index.ts';
import type { HandlerModule } from '../src/sdk/define-handler.ts';
import { DISPATCH_COUNTER } from '../src/server-user/dispatcher.ts';
import { TestClient, type ToDeviceEventJson } from './support/client.ts';
import { CoreCryptoMember, loadCoreCrypto } from './support/core-crypto-member.ts';
import { mlsClaim, MlsMember, T } from './support/mls-member.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

// Wire's CoreCrypto (OpenMLS, Rust, as WebAssembly) is a devDependency, so this runs wherever
// `npm ci` ran; it is skipped, not failed, only where the package could not be installed.
const cc = await loadCoreCrypto();

// RFC 9420 §17.1 numbers and the names the module's config uses.
const SUITES: Record<number, string> = {
  1: 'MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519',
  2: 'MLS_128_DHKEMP256_AES128GCM_SHA256_P256',
  3: 'MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519',
  4: 'MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448',
  5: 'MLS_256_DHKEMP521_AES256GCM_SHA512_P521',
  6: 'MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448',
  7: 'MLS_256_DHKEMP384_AES256GCM_SHA384_P384',
};

const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64').replace(/=+$/, '');
const ofType = (events: ToDeviceEventJson[], type: string) => events.filter((e) => e.type === type);

let t: TestApp;
let n = 0;
const client = async (name: string) => TestClient.register(t.app, `${name}${n++}`);

beforeAll(async () => {
  t = await startTestApp({}, [{ module: mls as HandlerModule<unknown>, config: { ciphersuites: Object.values(SUITES) } }]);
});
afterAll(() => t.close());

describe.skipIf(cc === null)('a group of ts-mls and CoreCrypto (OpenMLS) devices through the delivery service', () => {
  it('uploads, claims, commits, welcomes and decrypts across the two stacks', async () => {
    if (cc === null) return;
    const wire = await CoreCryptoMember.of(cc, await client('wire'));
    const alice = await MlsMember.of(await client('alice'));

    // CoreCrypto's bare KeyPackages pass the module's checks at /keys/upload (signatures, identity, lifetime).
    expect(await wire.uploadKeyPackages(2)).toMatchObject({ status: 200, body: { one_time_key_counts: { mls: 2 } } });

    // ts-mls claims one (with MSC4244's mls object) and creates a group with it; the DS releases the Welcome to CoreCrypto.
    const claimed = Object.values(await alice.claim(wire.client.userId, [wire.client.deviceId]));
    expect(claimed).toHaveLength(1);
    const groupId = new Uint8Array(randomBytes(16));
    await alice.mls.createGroup(groupId);
    const created = await alice.mls.commit([claimed[0]?.keyPackage ?? ''], { publicMessage: true });
    expect(await alice.ask(T.message, { message: created.message, commit_info: { welcome: created.welcome, added: [wire.ref] } })).toMatchObject([
      { type: T.commit, content: { epoch: 1, sender: alice.ref } },
    ]);
    alice.mls.apply(created);
    const [welcome] = ofType(await wire.events(), T.welcome);
    expect(welcome?.content).toMatchObject({ group_id: b64(groupId), epoch: 1 });
    expect(await wire.join(String(welcome?.content.welcome))).toEqual(groupId);
    expect(await wire.epoch(groupId)).toBe(1);

    // Application messages each way.
    await wire.send(T.message, { message: await wire.encrypt(groupId, 'hello from OpenMLS') });
    const [relay] = ofType(await alice.inbox.take(), T.relay);
    expect(relay?.content).toMatchObject({ group_id: b64(groupId), epoch: 1, sender: wire.ref });
    expect(await alice.mls.receive(String(relay?.content.message))).toBe('hello from OpenMLS');
    expect(await alice.ask(T.message, { message: await alice.mls.encrypt('hello from ts-mls') })).toEqual([]);
    const [back] = ofType(await wire.events(), T.relay);
    expect(await wire.receive(groupId, String(back?.content.message))).toBe('hello from ts-mls');

    // CoreCrypto commits an add of a ts-mls device; the ts-mls members follow the commit.
    const bob = await MlsMember.of(await client('bob'));
    await bob.uploadKeyPackages(1);
    const claimedBob = await wire.client.json<{ one_time_keys: Record<string, Record<string, Record<string, { key: string }>>> }>('POST', '/v3/keys/claim', {
      one_time_keys: { [bob.client.userId]: { [bob.client.deviceId]: 'mls' } },
      mls: mlsClaim([SUITES[1] ?? '']),
    });
    const bobPackage = Object.values(claimedBob.body.one_time_keys[bob.client.userId]?.[bob.client.deviceId] ?? {})[0];
    expect(await wire.add(groupId, [{ ref: bob.ref, keyPackage: bobPackage?.key ?? '' }])).toEqual({ accepted: true, epoch: 2 });
    expect(await wire.epoch(groupId)).toBe(2);
    const [commit] = ofType(await alice.inbox.take(), T.commit);
    expect(commit?.content).toMatchObject({ epoch: 2, sender: wire.ref, added: [bob.ref] });
    expect(await alice.mls.receive(String(commit?.content.message))).toBeNull();
    expect(alice.mls.epoch).toBe(2);
    const [bobWelcome] = ofType(await bob.inbox.take(), T.welcome);
    await bob.mls.join(String(bobWelcome?.content.welcome));
    expect(bob.mls.epoch).toBe(2);

    await wire.send(T.message, { message: await wire.encrypt(groupId, 'three of us') });
    for (const m of [alice, bob]) {
      const [r] = ofType(await m.inbox.take(), T.relay);
      expect(await m.mls.receive(String(r?.content.message))).toBe('three of us');
    }

    // One commit per epoch across stacks: ts-mls commits in epoch 2 first, so CoreCrypto's
    // commit for epoch 2 loses and is told the current epoch; it applies the winner and retries.
    const aliceUpdate = await alice.mls.commit([], { publicMessage: true });
    expect(await alice.ask(T.message, { message: aliceUpdate.message })).toMatchObject([{ type: T.commit, content: { epoch: 3, sender: alice.ref } }]);
    alice.mls.apply(aliceUpdate);
    const [toBob] = ofType(await bob.inbox.take(), T.commit);
    await bob.mls.receive(String(toBob?.content.message));
    expect(await wire.update(groupId)).toEqual({ accepted: false, reason: 'wrong_epoch', epoch: 3 });
    expect(await wire.epoch(groupId)).toBe(2);
    const missed = ofType(await wire.events(), T.commit);
    expect(missed.map((e) => e.content)).toMatchObject([{ epoch: 3, sender: alice.ref }]);
    expect(await wire.receive(groupId, String(missed[0]?.content.message))).toBeNull();
    expect(await wire.epoch(groupId)).toBe(3);
    expect(await wire.update(groupId)).toEqual({ accepted: true, epoch: 4 });
    for (const m of [alice, bob]) {
      const [c] = ofType(await m.inbox.take(), T.commit);
      expect(c?.content).toMatchObject({ epoch: 4, sender: wire.ref });
      await m.mls.receive(String(c?.content.message));
      expect(m.mls.epoch).toBe(4);
    }
    // And the group still talks in the new epoch, ts-mls to CoreCrypto.
    await bob.ask(T.message, { message: await bob.mls.encrypt('epoch four') });
    const [last] = ofType(await wire.events(), T.relay);
    expect(last?.content).toMatchObject({ epoch: 4, sender: bob.ref });
    expect(await wire.receive(groupId, String(last?.content.message))).toBe('epoch four');

    // CoreCrypto removes the ts-mls device it added: the commit reaches the removed device too
    // (so it learns of it), and nothing of the next epoch does.
    expect(await wire.remove(groupId, [bob.ref])).toEqual({ accepted: true, epoch: 5 });
    for (const m of [alice, bob]) {
      const [c] = ofType(await m.inbox.take(), T.commit);
      expect(c?.content).toMatchObject({ epoch: 5, sender: wire.ref, removed: [bob.ref] });
      if (m === alice) await m.mls.receive(String(c?.content.message));
    }
    expect(alice.mls.epoch).toBe(5);
    await wire.send(T.message, { message: await wire.encrypt(groupId, 'without bob') });
    const [afterRemoval] = ofType(await alice.inbox.take(), T.relay);
    expect(await alice.mls.receive(String(afterRemoval?.content.message))).toBe('without bob');
    expect(await bob.inbox.take()).toEqual([]);

    for (const outcome of ['error', 'timeout']) expect(t.services.counters.get(DISPATCH_COUNTER, { type: T.message, outcome })).toBe(0);
  }, 60_000);

  it('refuses an MLSMessage-wrapped KeyPackage (what the retired directory took): MSC4244 uploads bare ones', async () => {
    if (cc === null) return;
    const wire = await CoreCryptoMember.of(cc, await client('wire'));
    const [bare] = await wire.keyPackages(1);
    const wrapped = b64(Buffer.concat([Uint8Array.of(0, 1, 0, 5), Buffer.from(bare ?? '', 'base64')]));
    const refused = await wire.client.json<{ errcode: string; error: string }>('POST', '/v3/keys/upload', { one_time_keys: { 'mls:w': { key: wrapped } } });
    expect([refused.status, refused.body.errcode]).toEqual([400, 'M_INVALID_PARAM']);
    expect(refused.body.error).toMatch(/undecodable/);
    expect((await wire.client.json('POST', '/v3/keys/upload', { one_time_keys: { 'mls:b': { key: bare } } })).status).toBe(200);
  });

  it('refuses a CoreCrypto KeyPackage uploaded by another device as wrong_identity', async () => {
    if (cc === null) return;
    const wire = await CoreCryptoMember.of(cc, await client('wire'));
    const other = await client('mallory');
    const [bare] = await wire.keyPackages(1);
    const refused = await other.json<{ error: string }>('POST', '/v3/keys/upload', { one_time_keys: { 'mls:x': { key: bare } } });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatch(/wrong_identity/);
  });

  it('accepts CoreCrypto KeyPackages of every suite CoreCrypto offers, and claims them by acceptable_ciphersuites', async () => {
    if (cc === null) return;
    const offered = [1, 2, 3, 5, 7];
    const wire = await CoreCryptoMember.of(cc, await client('wire'), offered);
    const packages = await Promise.all(offered.map(async (suite) => (await wire.keyPackages(1, suite))[0] ?? ''));
    const uploaded = await wire.client.json('POST', '/v3/keys/upload', { one_time_keys: Object.fromEntries(packages.map((key, i) => [`mls:s${i}`, { key }])) });
    expect(uploaded).toMatchObject({ status: 200, body: { one_time_key_counts: { mls: offered.length } } });
    const claimer = await MlsMember.of(await client('claimer'));
    // Latest suite first: a claim ignoring acceptable_ciphersuites would take mls:s0 each time.
    for (const [i, suite] of [...offered.entries()].reverse()) {
      const claimed = await claimer.claim(wire.client.userId, [wire.client.deviceId], mlsClaim([SUITES[suite] ?? '']));
      expect(claimed[wire.client.deviceId]).toEqual({ keyId: `mls:s${i}`, keyPackage: packages[i] });
    }
  });
});
