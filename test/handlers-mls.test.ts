import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mls from '../handlers/mls/index.ts';
import type { HandlerModule } from '../src/sdk/define-handler.ts';
import { federationOutbox } from '../src/storage/schema.ts';
import { TestClient } from './support/client.ts';
import { formGroup, MlsMember, T } from './support/mls-member.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

let t: TestApp;
let n = 0;
const member = async (name: string): Promise<MlsMember> => MlsMember.of(await TestClient.register(t.app, `${name}${n++}`));

beforeAll(async () => {
  t = await startTestApp({}, [{ module: mls as HandlerModule<unknown>, config: { claim_rate: { per_minute: 1, burst: 15 } } }]);
});
afterAll(() => t.close());

describe('KeyPackage directory', () => {
  it('stores valid packages and a last-resort one, and counts them', async () => {
    const alice = await member('alice');
    const packages = [await alice.mls.keyPackage(), await alice.mls.keyPackage()];
    const [uploaded] = await alice.ask(T.upload, { key_packages: packages, last_resort: await alice.mls.keyPackage(), request_id: 'r1' });
    expect(uploaded).toEqual({
      sender: `@:${SERVER_NAME}`,
      type: T.uploaded,
      content: { request_id: 'r1', accepted: 2, rejected: [], last_resort: { accepted: true }, count: 2, has_last_resort: true },
    });
    // The same package again is stored once.
    await alice.ask(T.upload, { key_packages: [packages[0]] });
    expect((await alice.ask(T.count, {}))[0]?.content).toEqual({ count: 2, has_last_resort: true });
  });

  it('refuses undecodable packages, other wire formats, bad signatures and someone else\'s identity', async () => {
    const alice = await member('alice');
    const good = await alice.mls.keyPackage();
    const bytes = Buffer.from(good, 'base64');
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0xff; // the package's signature is last
    const tampered = bytes.toString('base64');
    const impostor = await alice.mls.keyPackage(`@mallory:${SERVER_NAME}|MALLORY`);
    const otherDevice = await alice.mls.keyPackage(`${alice.client.userId}|OTHERDEVICE`);
    await alice.mls.createGroup(randomBytes(16));
    const notAKeyPackage = (await alice.mls.commit()).message;
    const [reply] = await alice.ask(T.upload, { key_packages: ['AAAA', notAKeyPackage, tampered, impostor, otherDevice, good], last_resort: 'AAAA' });
    expect(reply?.content).toMatchObject({
      accepted: 1,
      rejected: [
        { index: 0, reason: 'undecodable' },
        { index: 1, reason: 'not_a_key_package' },
        { index: 2, reason: 'bad_signature' },
        { index: 3, reason: 'wrong_identity' },
        { index: 4, reason: 'wrong_identity' },
      ],
      last_resort: { accepted: false, reason: 'undecodable' },
      count: 1,
      has_last_resort: false,
    });
  });

  it('hands each one-time package out once, then the last-resort one every time', async () => {
    const alice = await member('alice');
    const bob = await member('bob');
    const packages = [await alice.mls.keyPackage(), await alice.mls.keyPackage()];
    const lastResort = await alice.mls.keyPackage();
    await alice.ask(T.upload, { key_packages: packages, last_resort: lastResort });
    const device = alice.client.deviceId;
    const first = await bob.claim(alice.client.userId);
    const second = await bob.claim(alice.client.userId);
    expect([first[device], second[device]]).toEqual([
      { key_package: packages[0], last_resort: false },
      { key_package: packages[1], last_resort: false },
    ]);
    for (const _ of [1, 2]) expect((await bob.claim(alice.client.userId))[device]).toEqual({ key_package: lastResort, last_resort: true });
    expect((await alice.ask(T.count, {}))[0]?.content).toEqual({ count: 0, has_last_resort: true });
  });

  it('gives concurrent claimers different packages', async () => {
    const alice = await member('alice');
    const claimers = await Promise.all([1, 2, 3, 4].map(() => member('claimer')));
    const packages = await alice.uploadKeyPackages(4);
    const claimed = await Promise.all(claimers.map((c) => c.claim(alice.client.userId)));
    expect(claimed.map((c) => c[alice.client.deviceId]?.key_package).sort()).toEqual([...packages].sort());
  });

  it('answers a claim for a user without packages with an empty map, and rate-limits claims', async () => {
    const carol = await member('carol');
    expect(await carol.claim(`@nobody:${SERVER_NAME}`)).toEqual({});
    for (let i = 1; i < 15; i++) await carol.claim(`@nobody:${SERVER_NAME}`);
    const [limited] = await carol.ask(T.claim, { user_id: `@nobody:${SERVER_NAME}`, request_id: 'x' });
    expect(limited).toMatchObject({ type: T.error, content: { request_id: 'x', errcode: 'M_LIMIT_EXCEEDED', retry_after_ms: expect.any(Number) } });
  });
});

describe('groups and commit ordering', () => {
  let alice: MlsMember;
  let bob: MlsMember;
  let carol: MlsMember;

  beforeAll(async () => {
    [alice, bob, carol] = await Promise.all([member('alice'), member('bob'), member('carol')]);
  });

  it('creates a group with its first commit, confirms it, and releases the Welcome to the added device', async () => {
    await bob.uploadKeyPackages(1);
    const bobPackage = Object.values(await alice.claim(bob.client.userId))[0]?.key_package ?? '';
    await alice.mls.createGroup(randomBytes(16));
    const pending = await alice.mls.commit([bobPackage]);
    const replies = await alice.ask(T.message, { message: pending.message, commit_info: { welcome: pending.welcome, added: [bob.ref] }, request_id: 'c1' });
    expect(replies).toEqual([{ sender: `@:${SERVER_NAME}`, type: T.accepted, content: { request_id: 'c1', group_id: alice.mls.groupId, epoch: 1 } }]);
    alice.mls.apply(pending);
    const [welcome] = await bob.inbox.take();
    expect(welcome).toMatchObject({ type: T.welcome, content: { group_id: alice.mls.groupId, epoch: 1, welcome: pending.welcome, sender: alice.ref } });
    await bob.mls.join(String(welcome?.content.welcome));
    expect(bob.mls.epoch).toBe(1);
  });

  it('relays application messages for the current epoch to the other members', async () => {
    const message = await bob.mls.encrypt('hello alice');
    expect(await bob.ask(T.message, { message })).toEqual([]);
    const [relayed] = await alice.inbox.take();
    expect(relayed).toMatchObject({ type: T.relay, content: { group_id: alice.mls.groupId, epoch: 1, message, sender: bob.ref } });
    expect(await alice.mls.receive(String(relayed?.content.message))).toBe('hello alice');
  });

  it('rejects the losing commit of an epoch with the current epoch, and never releases its Welcome', async () => {
    await carol.uploadKeyPackages(1);
    const carolPackage = Object.values(await alice.claim(carol.client.userId))[0]?.key_package ?? '';
    const bobs = await bob.mls.commit([], { publicMessage: true });
    const alices = await alice.mls.commit([carolPackage]);
    expect((await bob.ask(T.message, { message: bobs.message }))[0]).toMatchObject({ type: T.accepted, content: { epoch: 2 } });
    bob.mls.apply(bobs);
    const toAlice = await alice.ask(T.message, { message: alices.message, commit_info: { welcome: alices.welcome, added: [carol.ref] }, request_id: 'lost' });
    expect(toAlice.find((e) => e.type === T.rejected)).toMatchObject({ type: T.rejected, content: { request_id: 'lost', group_id: alice.mls.groupId, epoch: 2, reason: 'wrong_epoch' } });
    expect(await carol.inbox.take()).toEqual([]);

    // Alice applies the winner (fanned out to her), then adds Carol in the new epoch.
    const commit = toAlice.find((e) => e.type === T.commit);
    expect(commit).toMatchObject({ type: T.commit, content: { epoch: 2, message: bobs.message, sender: bob.ref } });
    await alice.mls.receive(String(commit?.content.message));
    const retry = await alice.mls.commit([carolPackage]);
    expect((await alice.ask(T.message, { message: retry.message, commit_info: { welcome: retry.welcome, added: [carol.ref] } }))[0]).toMatchObject({
      type: T.accepted,
      content: { epoch: 3 },
    });
    alice.mls.apply(retry);
    const [welcome] = await carol.inbox.take();
    expect(welcome).toMatchObject({ type: T.welcome, content: { epoch: 3 } });
    await carol.mls.join(String(welcome?.content.welcome));
    await bob.mls.receive(String((await bob.inbox.ofType(T.commit))[0]?.content.message));
    expect([alice.mls.epoch, bob.mls.epoch, carol.mls.epoch]).toEqual([3, 3, 3]);
  });

  it('answers a retried accepted commit with its confirmation again, without fanning it out twice', async () => {
    const pending = await carol.mls.commit();
    expect((await carol.ask(T.message, { message: pending.message }))[0]).toMatchObject({ type: T.accepted, content: { epoch: 4 } });
    carol.mls.apply(pending);
    expect((await carol.ask(T.message, { message: pending.message }))[0]).toMatchObject({ type: T.accepted, content: { epoch: 4, duplicate: true } });
    for (const m of [alice, bob]) {
      const commits = await m.inbox.ofType(T.commit);
      expect(commits).toHaveLength(1);
      await m.mls.receive(String(commits[0]?.content.message));
    }
  });

  it('refuses non-members, unknown groups, stale epochs and things that are not MLS messages', async () => {
    const dave = await member('dave');
    const fromAlice = await alice.mls.encrypt('not for dave');
    await bob.inbox.take();
    await carol.inbox.take();
    expect((await dave.ask(T.message, { message: fromAlice }))[0]?.content).toMatchObject({ reason: 'not_member', epoch: null, group_id: alice.mls.groupId });
    expect(await bob.inbox.take()).toEqual([]);

    await dave.mls.createGroup(randomBytes(16));
    const daveCommit = await dave.mls.commit();
    const daveApp = await dave.mls.encrypt('x');
    expect((await dave.ask(T.message, { message: daveApp }))[0]?.content).toMatchObject({ reason: 'unknown_group' });
    expect((await dave.ask(T.message, { message: daveCommit.message, commit_info: { added: [bob.ref] } }))[0]?.content).toMatchObject({ reason: 'missing_welcome' });
    expect((await dave.ask(T.message, { message: 'AAAA' }))[0]?.content).toMatchObject({ reason: 'invalid_message', group_id: null });
    expect((await dave.ask(T.message, { message: await dave.mls.keyPackage() }))[0]?.content).toMatchObject({ reason: 'invalid_message' });

    // A member's message from an epoch the group has left.
    const stale = await bob.mls.commit();
    const accepted = await alice.mls.commit();
    await alice.ask(T.message, { message: accepted.message });
    alice.mls.apply(accepted);
    const toBob = await bob.ask(T.message, { message: stale.message });
    expect(toBob.find((e) => e.type === T.rejected)?.content).toMatchObject({ reason: 'wrong_epoch', epoch: 5 });
  });

  it('sends the Welcome for a device on another server through the federation outbox', async () => {
    const zoe = { user_id: '@zoe:remote.example', device_id: 'ZOE' };
    const pending = await alice.mls.commit([await (await member('stand-in')).mls.keyPackage()]);
    await alice.ask(T.message, { message: pending.message, commit_info: { welcome: pending.welcome, added: [zoe] } });
    const rows = await t.database.db.select().from(federationOutbox);
    expect(rows.find((r) => r.type === T.welcome)).toMatchObject({ destination: 'remote.example', userId: zoe.user_id, deviceId: 'ZOE', sender: `@:${SERVER_NAME}` });
  });
});

describe('exactly one commit per epoch', () => {
  it('accepts one of 12 concurrent commits for the same epoch, rejects 11 with the current epoch, and releases only the winner\'s Welcome', async () => {
    const creator = await member('racer');
    const others = await Promise.all(Array.from({ length: 11 }, () => member('racer')));
    await formGroup(creator, others, randomBytes(16));
    const everyone = [creator, ...others];
    // Each racer adds a newcomer of its own: a Welcome released for any loser would show up.
    const newcomers = await Promise.all(everyone.map(() => member('newcomer')));
    await Promise.all(newcomers.map((nc) => nc.uploadKeyPackages(1)));
    const packages = await Promise.all(everyone.map(async (m, i) => Object.values(await m.claim(newcomers[i]?.client.userId ?? ''))[0]?.key_package ?? ''));
    const commits = await Promise.all(everyone.map((m, i) => m.mls.commit([packages[i] ?? ''])));
    await Promise.all(
      everyone.map((m, i) => m.send(T.message, { message: commits[i]?.message, commit_info: { welcome: commits[i]?.welcome, added: [newcomers[i]?.ref] } })),
    );
    const outcomes = await Promise.all(everyone.map((m) => m.inbox.take()));
    const own = outcomes.map((events) => events.find((e) => e.type === T.accepted || e.type === T.rejected));
    expect(own.filter((e) => e?.type === T.accepted)).toHaveLength(1);
    const rejected = own.filter((e) => e?.type === T.rejected);
    expect(rejected).toHaveLength(11);
    for (const r of rejected) expect(r?.content).toMatchObject({ reason: 'wrong_epoch', epoch: 2 });
    // Every loser got the winner's commit, exactly once.
    const winner = own.findIndex((e) => e?.type === T.accepted);
    outcomes.forEach((events, i) => expect(events.filter((e) => e.type === T.commit)).toHaveLength(i === winner ? 0 : 1));
    const welcomes = await Promise.all(newcomers.map((nc) => nc.inbox.take()));
    welcomes.forEach((events, i) => expect(events.map((e) => e.type)).toEqual(i === winner ? [T.welcome] : []));
    await newcomers[winner]?.mls.join(String(welcomes[winner]?.[0]?.content.welcome));
    expect(newcomers[winner]?.mls.epoch).toBe(2);
  });
});

describe('what the service refuses before deciding anything', () => {
  let alice: MlsMember;
  let bob: MlsMember;

  beforeAll(async () => {
    [alice, bob] = await Promise.all([member('alice'), member('bob')]);
    await formGroup(alice, [bob], randomBytes(16));
  });

  it('refuses commit_info naming a server user or an invalid user ID, and the epoch stays for the real commit', async () => {
    const newcomer = await member('newcomer');
    await newcomer.uploadKeyPackages(1);
    const pending = await alice.mls.commit([Object.values(await alice.claim(newcomer.client.userId))[0]?.key_package ?? '']);
    for (const bad of [{ user_id: `@:${SERVER_NAME}`, device_id: '' }, { user_id: '@bad:not a server', device_id: 'X' }]) {
      for (const commitInfo of [{ welcome: pending.welcome, added: [bad] }, { removed: [bad] }]) {
        const replies = await alice.ask(T.message, { message: pending.message, commit_info: commitInfo });
        expect(replies).toEqual([{ sender: `@:${SERVER_NAME}`, type: T.rejected, content: expect.objectContaining({ reason: 'invalid_commit_info', epoch: null }) }]);
      }
    }
    expect(await bob.inbox.take()).toEqual([]);
    const replies = await alice.ask(T.message, { message: pending.message, commit_info: { welcome: pending.welcome, added: [newcomer.ref] } });
    expect(replies[0]).toMatchObject({ type: T.accepted, content: { epoch: 2 } });
    alice.mls.apply(pending);
    await newcomer.mls.join(String((await newcomer.inbox.ofType(T.welcome))[0]?.content.welcome));
    await bob.mls.receive(String((await bob.inbox.ofType(T.commit))[0]?.content.message));
    expect([alice.mls.epoch, bob.mls.epoch, newcomer.mls.epoch]).toEqual([2, 2, 2]);
  });

  it('refuses a message that fits in the request but not, once framed, in the relay to the others', async () => {
    // Aim for an MLS message just under the request limit: the relay adds group id and sender.
    // Base64 and MLS framing make the size only roughly linear in the plaintext, so home in on it.
    let size = 48_000;
    let message = await bob.mls.encrypt('x'.repeat(size));
    for (let i = 0; i < 3 && Math.abs(message.length - 65_450) > 40; i++) {
      size += Math.floor(((65_450 - message.length) * 3) / 4);
      message = await bob.mls.encrypt('x'.repeat(size));
    }
    expect(message.length).toBeGreaterThan(65_400);
    expect(message.length).toBeLessThanOrEqual(65_536 - '{"message":""}'.length);
    const replies = await bob.ask(T.message, { message, request_id: 'big' });
    expect(replies).toEqual([{ sender: `@:${SERVER_NAME}`, type: T.rejected, content: expect.objectContaining({ request_id: 'big', reason: 'too_large' }) }]);
    expect(await alice.inbox.take()).toEqual([]);
    // Still in the group and heard: a small message goes through.
    const small = await bob.mls.encrypt('still here');
    expect(await bob.ask(T.message, { message: small })).toEqual([]);
    expect(await alice.mls.receive(String((await alice.inbox.ofType(T.relay))[0]?.content.message))).toBe('still here');
  });
});
