import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mls from '../handlers/mls/index.ts';
import type { HandlerModule } from '../src/sdk/define-handler.ts';
import { federationOutbox } from '../src/storage/schema.ts';
import { TestClient } from './support/client.ts';
import { formGroup, isOwnCommit, MlsMember, T } from './support/mls-member.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

let t: TestApp;
let n = 0;
const member = async (name: string): Promise<MlsMember> => MlsMember.of(await TestClient.register(t.app, `${name}${n++}`));

beforeAll(async () => {
  t = await startTestApp({}, [{ module: mls as HandlerModule<unknown> }]);
});
afterAll(() => t.close());

describe('the retired to-device KeyPackage directory', () => {
  it('answers its three request types M_UNRECOGNIZED, naming the keys API, and stores nothing', async () => {
    const alice = await member('alice');
    for (const type of ['upload', 'claim', 'count']) {
      const replies = await alice.ask(`org.matrix.msc4244.key_packages.${type}`, { key_packages: [await alice.mls.keyPackage()], user_id: alice.client.userId, request_id: type });
      expect(replies).toEqual([
        { sender: `@:${SERVER_NAME}`, type: 'org.matrix.msc4244.key_packages.error', content: { request_id: type, errcode: 'M_UNRECOGNIZED', error: expect.stringContaining('/keys/upload') } },
      ]);
    }
    const upload = await alice.client.json<{ one_time_key_counts: Record<string, number> }>('POST', '/v3/keys/upload', {});
    expect(upload.body.one_time_key_counts.mls).toBeUndefined();
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
    const bobPackage = (await alice.claim(bob.client.userId, [bob.client.deviceId]))[bob.client.deviceId]?.keyPackage ?? '';
    await alice.mls.createGroup(randomBytes(16));
    const pending = await alice.mls.commit([bobPackage]);
    const replies = await alice.ask(T.message, { message: pending.message, commit_info: { welcome: pending.welcome, added: [bob.ref] }, request_id: 'c1' });
    // MSC4244: the accepted commit goes to every joined device, the committer included (with its request_id).
    expect(replies).toEqual([
      {
        sender: `@:${SERVER_NAME}`,
        type: T.commit,
        content: { request_id: 'c1', group_id: alice.mls.groupId, epoch: 1, message: pending.message, sender: alice.ref, added: [bob.ref], removed: [] },
      },
    ]);
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
    const carolPackage = (await alice.claim(carol.client.userId, [carol.client.deviceId]))[carol.client.deviceId]?.keyPackage ?? '';
    const bobs = await bob.mls.commit([], { publicMessage: true });
    const alices = await alice.mls.commit([carolPackage]);
    expect((await bob.ask(T.message, { message: bobs.message }))[0]).toMatchObject({ type: T.commit, content: { epoch: 2, sender: bob.ref } });
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
      type: T.commit,
      content: { epoch: 3, sender: alice.ref },
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
    expect((await carol.ask(T.message, { message: pending.message }))[0]).toMatchObject({ type: T.commit, content: { epoch: 4, sender: carol.ref } });
    carol.mls.apply(pending);
    expect((await carol.ask(T.message, { message: pending.message }))[0]).toMatchObject({ type: T.commit, content: { epoch: 4, sender: carol.ref, duplicate: true } });
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
    const packages = await Promise.all(
      everyone.map(async (m, i) => {
        const nc = newcomers[i];
        return nc === undefined ? '' : ((await m.claim(nc.client.userId, [nc.client.deviceId]))[nc.client.deviceId]?.keyPackage ?? '');
      }),
    );
    const commits = await Promise.all(everyone.map((m, i) => m.mls.commit([packages[i] ?? ''])));
    await Promise.all(
      everyone.map((m, i) => m.send(T.message, { message: commits[i]?.message, commit_info: { welcome: commits[i]?.welcome, added: [newcomers[i]?.ref] } })),
    );
    const outcomes = await Promise.all(everyone.map((m) => m.inbox.take()));
    const own = outcomes.map((events, i) => events.find((e) => e.type === T.rejected || (e.type === T.commit && isOwnCommit(e, everyone[i] as MlsMember))));
    expect(own.filter((e) => e?.type === T.commit)).toHaveLength(1);
    const rejected = own.filter((e) => e?.type === T.rejected);
    expect(rejected).toHaveLength(11);
    for (const r of rejected) expect(r?.content).toMatchObject({ reason: 'wrong_epoch', epoch: 2 });
    // Every loser got the winner's commit, exactly once.
    const winner = own.findIndex((e) => e?.type === T.commit);
    outcomes.forEach((events, i) => expect(events.filter((e) => e.type === T.commit && !isOwnCommit(e, everyone[i] as MlsMember))).toHaveLength(i === winner ? 0 : 1));
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
    const pending = await alice.mls.commit([(await alice.claim(newcomer.client.userId, [newcomer.client.deviceId]))[newcomer.client.deviceId]?.keyPackage ?? '']);
    for (const bad of [{ user_id: `@:${SERVER_NAME}`, device_id: '' }, { user_id: '@bad:not a server', device_id: 'X' }]) {
      for (const commitInfo of [{ welcome: pending.welcome, added: [bad] }, { removed: [bad] }]) {
        const replies = await alice.ask(T.message, { message: pending.message, commit_info: commitInfo });
        expect(replies).toEqual([{ sender: `@:${SERVER_NAME}`, type: T.rejected, content: expect.objectContaining({ reason: 'invalid_commit_info', epoch: null }) }]);
      }
    }
    expect(await bob.inbox.take()).toEqual([]);
    const replies = await alice.ask(T.message, { message: pending.message, commit_info: { welcome: pending.welcome, added: [newcomer.ref] } });
    expect(replies[0]).toMatchObject({ type: T.commit, content: { epoch: 2, sender: alice.ref } });
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
