import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mls from '../handlers/mls/index.ts';
import type { HandlerModule } from '../src/sdk/define-handler.ts';
import { DISPATCH_COUNTER } from '../src/server-user/dispatcher.ts';
import { TestClient, type ToDeviceEventJson } from './support/client.ts';
import { CoreCryptoMember, loadCoreCrypto } from './support/core-crypto-member.ts';
import { MlsMember, T } from './support/mls-member.ts';
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
  t = await startTestApp({}, [{ module: mls as HandlerModule<unknown>, config: { ciphersuites: Object.values(SUITES), claim_rate: { burst: 1000 } } }]);
});
afterAll(() => t.close());

describe.skipIf(cc === null)('a group of ts-mls and CoreCrypto (OpenMLS) devices through the delivery service', () => {
  it('uploads, claims, commits, welcomes and decrypts across the two stacks', async () => {
    if (cc === null) return;
    const wire = await CoreCryptoMember.of(cc, await client('wire'));
    const alice = await MlsMember.of(await client('alice'));

    // CoreCrypto's KeyPackages pass the directory's checks (signatures, identity, lifetime).
    const { wrapped } = await wire.keyPackages(2);
    const [uploaded] = await wire.send(T.upload, { key_packages: wrapped });
    expect(uploaded?.content).toMatchObject({ accepted: 2, rejected: [], count: 2 });

    // ts-mls claims one and creates a group with it; the DS releases the Welcome to CoreCrypto.
    const claimed = Object.values(await alice.claim(wire.client.userId));
    expect(claimed).toHaveLength(1);
    const groupId = new Uint8Array(randomBytes(16));
    await alice.mls.createGroup(groupId);
    const created = await alice.mls.commit([claimed[0]?.key_package ?? ''], { publicMessage: true });
    expect(await alice.ask(T.message, { message: created.message, commit_info: { welcome: created.welcome, added: [wire.ref] } })).toMatchObject([
      { type: T.accepted, content: { epoch: 1 } },
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
    const claimedBob = await wire.send(T.claim, { user_id: bob.client.userId });
    const bobPackage = Object.values((ofType(claimedBob, T.claimed)[0]?.content.key_packages ?? {}) as Record<string, { key_package: string }>)[0];
    expect(await wire.add(groupId, [{ ref: bob.ref, keyPackage: bobPackage?.key_package ?? '' }])).toEqual({ accepted: true, epoch: 2 });
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
    expect(await alice.ask(T.message, { message: aliceUpdate.message })).toMatchObject([{ type: T.accepted, content: { epoch: 3 } }]);
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

  it('refuses a bare KeyPackage (CoreCrypto serialises them so) as undecodable: the directory takes an MLSMessage', async () => {
    if (cc === null) return;
    const wire = await CoreCryptoMember.of(cc, await client('wire'));
    const { raw, wrapped } = await wire.keyPackages(1);
    const [uploaded] = await wire.send(T.upload, { key_packages: [b64(raw[0] ?? new Uint8Array()), wrapped[0]] });
    // A bare KeyPackage starts with version then cipher_suite, where an MLSMessage has version
    // then wire_format: suite 1 reads as a PublicMessage that does not decode.
    expect(uploaded?.content).toMatchObject({ accepted: 1, rejected: [{ index: 0, reason: 'undecodable' }], count: 1 });
  });

  it('refuses a CoreCrypto KeyPackage uploaded by another device as wrong_identity', async () => {
    if (cc === null) return;
    const wire = await CoreCryptoMember.of(cc, await client('wire'));
    const other = await MlsMember.of(await client('mallory'));
    const { wrapped } = await wire.keyPackages(1);
    const [uploaded] = await other.ask(T.upload, { key_packages: wrapped });
    expect(uploaded?.content).toMatchObject({ accepted: 0, rejected: [{ index: 0, reason: 'wrong_identity' }], count: 0 });
  });

  it('accepts CoreCrypto KeyPackages of every suite CoreCrypto offers, and claims them by suite', async () => {
    if (cc === null) return;
    const offered = [1, 2, 3, 5, 7];
    const wire = await CoreCryptoMember.of(cc, await client('wire'), offered);
    const packages = await Promise.all(offered.map(async (suite) => (await wire.keyPackages(1, suite)).wrapped[0] ?? ''));
    const [uploaded] = await wire.send(T.upload, { key_packages: packages });
    expect(uploaded?.content).toMatchObject({ accepted: offered.length, rejected: [], count: offered.length });
    const claimer = await MlsMember.of(await client('claimer'));
    for (const [i, suite] of offered.entries()) {
      const [reply] = await claimer.ask(T.claim, { user_id: wire.client.userId, ciphersuite: SUITES[suite] });
      expect(reply?.content).toMatchObject({ key_packages: { [wire.client.deviceId]: { key_package: packages[i], last_resort: false } } });
    }
  });
});
