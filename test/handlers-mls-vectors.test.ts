import { readFileSync } from 'node:fs';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mls from '../handlers/mls/index.ts';
import { mlsGroupMembers, mlsGroups } from '../handlers/mls/schema.ts';
import type { HandlerModule } from '../src/sdk/define-handler.ts';
import { DISPATCH_COUNTER } from '../src/server-user/dispatcher.ts';
import { TestClient, type ToDeviceEventJson } from './support/client.ts';
import { Inbox } from './support/inbox.ts';
import { readMlsHeader, readVarint } from './support/mls-framing.ts';
import { T } from './support/mls-member.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

// The IETF MLS working group's interoperability test vectors (test/fixtures/mls/README.md says
// which commit and how they were cut), made by implementations other than ts-mls, run through
// everything the delivery service reads of MLS wire data.

interface Scenario {
  cipher_suite: number;
  key_package: string;
  welcome: string;
  epochs: { proposals: string[]; commit: string }[];
}
interface Protection {
  cipher_suite: number;
  group_id: string;
  epoch: number;
  proposal_pub: string;
  proposal_priv: string;
  commit_pub: string;
  commit_priv: string;
  application_priv: string;
}
interface Messages {
  mls_welcome: string;
  mls_group_info: string;
  mls_key_package: string;
  public_message_application: string;
  public_message_proposal: string;
  public_message_commit: string;
  private_message: string;
}

const fixture = <V>(name: string): V[] => JSON.parse(readFileSync(new URL(`./fixtures/mls/${name}`, import.meta.url), 'utf8')) as V[];
const deserialization = fixture<{ vlbytes_header: string; length: number }>('deserialization.json');
const welcomes = fixture<{ cipher_suite: number; key_package: string; welcome: string }>('welcome.json');
const protection = fixture<Protection>('message-protection.json');
const messages = fixture<Messages>('messages.json');
const passiveWelcome = fixture<Scenario>('passive-client-welcome.json');
const handlingCommit = fixture<Scenario>('passive-client-handling-commit.json');
const random = fixture<Scenario>('passive-client-random.json');
const scenarios = [...handlingCommit, ...random];

const RFC_SUITES = [
  'MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519',
  'MLS_128_DHKEMP256_AES128GCM_SHA256_P256',
  'MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519',
  'MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448',
  'MLS_256_DHKEMP521_AES256GCM_SHA512_P521',
  'MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448',
  'MLS_256_DHKEMP384_AES256GCM_SHA384_P384',
];
const REASONS = ['undecodable', 'not_a_key_package', 'unsupported_ciphersuite', 'bad_signature', 'wrong_identity', 'expired', 'init_key_reused', 'too_many'];

const unpadded = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64').replace(/=+$/, '');
/** Vectors are hex; Matrix carries unpadded base64. */
const b64 = (hex: string) => unpadded(Buffer.from(hex, 'hex'));
const header = (hex: string) => readMlsHeader(new Uint8Array(Buffer.from(hex, 'hex')));
/** The group id as this test's own reader sees it (not through ts-mls, which the service uses). */
const groupOf = (hex: string) => unpadded(header(hex).groupId ?? new Uint8Array());
const epochOf = (hex: string) => Number(header(hex).epoch);

const keyPackages = [
  ...welcomes.map((v) => v.key_package),
  ...passiveWelcome.map((v) => v.key_package),
  ...handlingCommit.map((v) => v.key_package),
  ...random.map((v) => v.key_package),
  ...messages.map((v) => v.mls_key_package),
];
const allWelcomes = [
  ...welcomes.map((v) => v.welcome),
  ...passiveWelcome.map((v) => v.welcome),
  ...scenarios.map((v) => v.welcome),
  ...messages.map((v) => v.mls_welcome),
];

interface Device {
  client: TestClient;
  inbox: Inbox;
  ref: { user_id: string; device_id: string };
}

/** Sends to the server user and returns what arrived for the sender since its last look. */
async function send(from: Device, type: string, content: Record<string, unknown>): Promise<ToDeviceEventJson[]> {
  const res = await from.client.sendToDevice(type, { [`@:${SERVER_NAME}`]: { '': content } });
  expect(res.status).toBe(200);
  return from.inbox.take();
}

/**
 * Uploads each package (unpadded base64, bare KeyPackage bytes as MSC4244 uploads them) as an
 * `mls` one-time key through /keys/upload, one per request so that each gets its own verdict:
 * `accepted`, or the reason the module's refusal names.
 */
async function upload(from: Device, packages: string[]): Promise<{ accepted: number; reasons: string[] }> {
  const reasons: string[] = [];
  let accepted = 0;
  for (const [i, key] of packages.entries()) {
    const res = await from.client.json<{ error?: string }>('POST', '/v3/keys/upload', { one_time_keys: { [`mls:v${n}-${i}`]: { key } } });
    if (res.status === 200) {
      accepted++;
      reasons.push('accepted');
    } else reasons.push(/KeyPackage refused, (\w+):/.exec(res.body.error ?? '')?.[1] ?? `status ${res.status}: ${res.body.error ?? ''}`);
  }
  return { accepted, reasons };
}

/** The vectors' KeyPackages are MLSMessages; MSC4244 uploads the bare KeyPackage inside (RFC 9420 §6: a 4-byte header). */
const bare = (hex: string) => unpadded(Buffer.from(hex, 'hex').subarray(4));

/**
 * Registers a group at `epoch` with these member devices, as the service would know it had it
 * ordered the group's earlier commits: the vectors start in the middle of a group's life. Some
 * scenarios share a group id, so whatever an earlier one left of it goes first.
 */
async function seedGroup(t: TestApp, groupId: string, epoch: number, members: Device[]): Promise<void> {
  await t.database.db.delete(mlsGroupMembers).where(eq(mlsGroupMembers.groupId, groupId));
  await t.database.db.delete(mlsGroups).where(eq(mlsGroups.groupId, groupId));
  await t.database.db.insert(mlsGroups).values({ groupId, epoch, creatorUserId: members[0]?.ref.user_id ?? '', family: 'm', createdTs: 0, updatedTs: 0 });
  await t.database.db.insert(mlsGroupMembers).values(members.map((m) => ({ groupId, userId: m.ref.user_id, deviceId: m.ref.device_id, addedEpoch: epoch })));
}

function expectNoHandlerErrors(t: TestApp): void {
  for (const type of [T.message]) {
    for (const outcome of ['error', 'timeout', 'invalid_content']) {
      expect({ type, outcome, n: t.services.counters.get(DISPATCH_COUNTER, { type, outcome }) }).toMatchObject({ n: 0 });
    }
  }
}

let n = 0;
async function device(t: TestApp, name: string): Promise<Device> {
  const client = await TestClient.register(t.app, `${name}${n++}`);
  return { client, inbox: new Inbox(client), ref: { user_id: client.userId, device_id: client.deviceId } };
}

describe("the test's own MLS reader", () => {
  it('reads the variable-length integers of the deserialization vectors', () => {
    for (const v of deserialization) expect({ header: v.vlbytes_header, length: readVarint(new Uint8Array(Buffer.from(v.vlbytes_header, 'hex'))) }).toEqual({ header: v.vlbytes_header, length: v.length });
  });
});

describe('KeyPackage directory, every RFC 9420 cipher suite allowed', () => {
  let t: TestApp;
  let alice: Device;
  beforeAll(async () => {
    t = await startTestApp({}, [{ module: mls as HandlerModule<unknown>, config: { ciphersuites: RFC_SUITES } }]);
    alice = await device(t, 'alice');
  });
  afterAll(() => t.close());

  it('verifies the vector KeyPackages of all seven suites and refuses each only for naming another device', async () => {
    expect(new Set(keyPackages.map((kp) => header(kp).cipherSuite))).toEqual(new Set([1, 2, 3, 4, 5, 6, 7]));
    // The checks run in order (decoding, version, suite, both signatures, then the credential),
    // so `wrong_identity` means the package decoded, its suite is supported and its signatures
    // verified; its basic credential ("Arnold", random bytes) cannot be `<user_id>|<device_id>`.
    const { accepted, reasons } = await upload(alice, keyPackages.map(bare));
    expect(accepted).toBe(0);
    expect(reasons).toEqual(keyPackages.map(() => 'wrong_identity'));
    expect(((await alice.client.sync()) as unknown as { device_one_time_keys_count: Record<string, number> }).device_one_time_keys_count.mls).toBeUndefined();
    expectNoHandlerErrors(t);
  });

  it('refuses the vectors of other wire formats, and KeyPackages still in their MLSMessage, as undecodable', async () => {
    const others = [...allWelcomes, ...messages.flatMap((m) => [m.mls_group_info, m.public_message_commit, m.public_message_proposal, m.private_message]), ...protection.map((p) => p.commit_priv)];
    const { reasons } = await upload(alice, [...others, ...keyPackages].map(b64));
    expect(reasons).toEqual([...others, ...keyPackages].map(() => 'undecodable'));
    expectNoHandlerErrors(t);
  });

  it('refuses truncated, extended, bit-flipped and badly signed vector KeyPackages with a documented reason', async () => {
    const oneOfEachSuite = welcomes.map((v) => Buffer.from(v.key_package, 'hex').subarray(4));
    const truncated = oneOfEachSuite.flatMap((kp) => [1, 3, 4, 10, kp.length >> 1, kp.length - 1].map((cut) => kp.subarray(0, cut)));
    const extended = oneOfEachSuite.map((kp) => Buffer.concat([kp, Buffer.of(0)]));
    // The package's own signature is its last field: flip its last byte.
    const badSignature = oneOfEachSuite.map((kp) => Buffer.concat([kp.subarray(0, -1), Buffer.of((kp.at(-1) ?? 0) ^ 1)]));
    const flipped = oneOfEachSuite.flatMap((kp) =>
      Array.from({ length: 16 }, (_, i) => {
        const copy = Buffer.from(kp);
        const at = 4 + Math.floor(((kp.length - 4) * i) / 16);
        copy[at] = (copy[at] ?? 0) ^ 0x80;
        return copy;
      }),
    );
    const r = (list: Buffer[]) => upload(alice, list.map(unpadded));
    expect((await r(truncated)).reasons).toEqual(truncated.map(() => 'undecodable'));
    expect((await r(extended)).reasons).toEqual(extended.map(() => 'undecodable'));
    expect((await r(badSignature)).reasons).toEqual(badSignature.map(() => 'bad_signature'));
    const some = await r(flipped);
    expect(some.accepted).toBe(0);
    for (const reason of some.reasons) expect(REASONS).toContain(reason);
    expectNoHandlerErrors(t);
  });
});

describe('KeyPackage directory, default config (suite 1 only)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({}, [{ module: mls as HandlerModule<unknown> }]);
  });
  afterAll(() => t.close());

  it('refuses vector KeyPackages of the other six suites as unsupported_ciphersuite', async () => {
    const alice = await device(t, 'alice');
    const { reasons } = await upload(alice, keyPackages.map(bare));
    expect(reasons).toEqual(keyPackages.map((kp) => (header(kp).cipherSuite === 1 ? 'wrong_identity' : 'unsupported_ciphersuite')));
    expectNoHandlerErrors(t);
  });
});

describe("group id, epoch and content type read from other stacks' messages", () => {
  let t: TestApp;
  let alice: Device;
  let bob: Device;
  beforeAll(async () => {
    t = await startTestApp({}, [{ module: mls as HandlerModule<unknown> }]);
    alice = await device(t, 'alice');
    bob = await device(t, 'bob');
  });
  afterAll(() => t.close());

  it('message protection, all seven suites: PublicMessage and PrivateMessage proposals, commits and application messages', async () => {
    for (const v of protection) {
      const group = b64(v.group_id);
      const all = [v.proposal_pub, v.proposal_priv, v.commit_pub, v.commit_priv, v.application_priv];
      // A group the service does not know: refused, but named by the id read from the framing.
      for (const m of all) {
        expect(await send(alice, T.message, { message: b64(m) })).toMatchObject([{ type: T.rejected, content: { reason: 'unknown_group', group_id: group, epoch: null } }]);
      }
      await seedGroup(t, group, v.epoch, [alice, bob]);
      for (const m of [v.application_priv, v.proposal_pub, v.proposal_priv]) {
        expect(await send(alice, T.message, { message: b64(m) })).toEqual([]);
        expect((await bob.inbox.take()).map((e) => [e.type, e.content])).toEqual([[T.relay, { group_id: group, epoch: v.epoch, message: b64(m), sender: alice.ref }]]);
      }
      expect(await send(alice, T.message, { message: b64(v.commit_pub) })).toMatchObject([{ type: T.commit, content: { group_id: group, epoch: v.epoch + 1 } }]);
      expect(await bob.inbox.take()).toMatchObject([{ type: T.commit, content: { group_id: group, epoch: v.epoch + 1, message: b64(v.commit_pub) } }]);
      // The PrivateMessage commit is for the epoch the PublicMessage one just closed.
      for (const m of [v.commit_priv, v.application_priv]) {
        expect(await send(alice, T.message, { message: b64(m) })).toMatchObject([{ type: T.rejected, content: { reason: 'wrong_epoch', group_id: group, epoch: v.epoch + 1 } }]);
      }
    }
    expectNoHandlerErrors(t);
  });

  it('messages: a foreign epoch-0 commit creates its group; proposals, application data and retries are judged by their framing', async () => {
    for (const v of messages) {
      const group = groupOf(v.public_message_commit);
      expect(header(v.public_message_commit)).toMatchObject({ contentType: 'commit', epoch: 0n });
      expect(await send(alice, T.message, { message: b64(v.public_message_proposal) })).toMatchObject([
        { type: T.rejected, content: { reason: 'unknown_group', group_id: groupOf(v.public_message_proposal) } },
      ]);
      expect(await send(alice, T.message, { message: b64(v.public_message_commit) })).toMatchObject([{ type: T.commit, content: { group_id: group, epoch: 1 } }]);
      expect(await send(alice, T.message, { message: b64(v.public_message_commit) })).toMatchObject([{ type: T.commit, content: { group_id: group, epoch: 1, duplicate: true } }]);
      expect(await send(alice, T.message, { message: b64(v.public_message_proposal) })).toMatchObject([{ type: T.rejected, content: { reason: 'wrong_epoch', epoch: 1 } }]);
      // RFC 9420 §6: application data is never a PublicMessage.
      expect(await send(alice, T.message, { message: b64(v.public_message_application) })).toMatchObject([
        { type: T.rejected, content: { reason: 'invalid_message', group_id: groupOf(v.public_message_application) } },
      ]);
      const p = header(v.private_message);
      const replies = await send(alice, T.message, { message: b64(v.private_message) });
      if (groupOf(v.private_message) !== group) expect(replies).toMatchObject([{ type: T.rejected, content: { reason: 'unknown_group' } }]);
      else if (p.contentType === 'application' && p.epoch === 1n) expect(replies).toEqual([]); // relayed, to nobody else
      else expect(replies).toMatchObject([{ type: T.rejected, content: { reason: 'wrong_epoch', epoch: 1 } }]);
      // Other wire formats are not messages for the group.
      for (const m of [v.mls_welcome, v.mls_group_info, v.mls_key_package]) {
        expect(await send(alice, T.message, { message: b64(m) })).toMatchObject([{ type: T.rejected, content: { reason: 'invalid_message', group_id: null } }]);
      }
    }
    expectNoHandlerErrors(t);
  });
});

describe('Welcomes of other stacks', () => {
  let t: TestApp;
  let alice: Device;
  let bob: Device;
  let carol: Device;
  beforeAll(async () => {
    t = await startTestApp({}, [{ module: mls as HandlerModule<unknown> }]);
    alice = await device(t, 'alice');
    bob = await device(t, 'bob');
    carol = await device(t, 'carol');
  });
  afterAll(() => t.close());

  it('takes every vector Welcome as a Welcome and refuses other wire formats as invalid_welcome, before deciding anything', async () => {
    // A commit for a group the service does not know: with a Welcome it reads as one, the
    // commit is refused for its group (unknown_group), which is decided after the Welcome check.
    const commit = b64(scenarios[0]?.epochs[0]?.commit ?? '');
    for (const w of allWelcomes) {
      expect(await send(alice, T.message, { message: commit, commit_info: { welcome: b64(w), added: [carol.ref] } })).toMatchObject([
        { type: T.rejected, content: { reason: 'unknown_group' } },
      ]);
    }
    const notWelcomes = [...messages.flatMap((m) => [m.mls_group_info, m.mls_key_package, m.public_message_commit, m.private_message]), ...protection.map((p) => p.commit_priv)];
    for (const w of notWelcomes) {
      expect(await send(alice, T.message, { message: commit, commit_info: { welcome: b64(w), added: [carol.ref] } })).toMatchObject([
        { type: T.rejected, content: { reason: 'invalid_welcome' } },
      ]);
    }
    expectNoHandlerErrors(t);
  });

  it('releases each Welcome, byte for byte, to the added device once the commit carrying it is accepted', async () => {
    // Carriers: the foreign epoch-0 commits of messages.json (each creates its group), then the
    // commits of the random passive-client scenario, in order, in a group registered at its epoch.
    const carriers = [...messages.map((m) => m.public_message_commit)];
    const run = random[0];
    if (run === undefined) throw new Error('no random scenario');
    await seedGroup(t, groupOf(run.epochs[0]?.commit ?? ''), epochOf(run.epochs[0]?.commit ?? ''), [alice, bob]);
    carriers.push(...run.epochs.map((e) => e.commit));
    const toRelease = [...messages.map((m) => m.mls_welcome), ...welcomes.map((v) => v.welcome), ...passiveWelcome.map((v) => v.welcome)];
    expect(carriers.length).toBeGreaterThanOrEqual(toRelease.length);
    for (const [i, w] of toRelease.entries()) {
      const commit = carriers[i] ?? '';
      expect(await send(alice, T.message, { message: b64(commit), commit_info: { welcome: b64(w), added: [carol.ref] } })).toMatchObject([
        { type: T.commit, content: { group_id: groupOf(commit), epoch: epochOf(commit) + 1 } },
      ]);
      expect((await carol.inbox.take()).map((e) => [e.type, e.content])).toEqual([
        [T.welcome, { group_id: groupOf(commit), epoch: epochOf(commit) + 1, welcome: b64(w), sender: alice.ref }],
      ]);
      await bob.inbox.take();
    }
    expectNoHandlerErrors(t);
  });
});

describe("passive-client scenarios: other stacks' proposals and commits ordered epoch after epoch", () => {
  let t: TestApp;
  let alice: Device;
  let bob: Device;
  let carol: Device;
  beforeAll(async () => {
    t = await startTestApp({}, [{ module: mls as HandlerModule<unknown> }]);
    alice = await device(t, 'alice');
    bob = await device(t, 'bob');
    carol = await device(t, 'carol');
  });
  afterAll(() => t.close());

  it('relays each epoch\'s proposals, accepts its commit once, and refuses it once the group has moved on', async () => {
    let commits = 0;
    for (const s of scenarios) {
      const first = s.epochs[0]?.commit ?? '';
      const group = groupOf(first);
      let epoch = epochOf(first);
      await seedGroup(t, group, epoch, [alice, bob]);
      for (const [i, e] of s.epochs.entries()) {
        expect({ group: groupOf(e.commit), epoch: epochOf(e.commit) }).toEqual({ group, epoch });
        for (const p of e.proposals) {
          expect(header(p)).toMatchObject({ contentType: 'proposal', epoch: BigInt(epoch) });
          expect(await send(alice, T.message, { message: b64(p) })).toEqual([]);
        }
        expect((await bob.inbox.take()).map((r) => [r.type, r.content])).toEqual(
          e.proposals.map((p) => [T.relay, { group_id: group, epoch, message: b64(p), sender: alice.ref }]),
        );
        // The scenario's own Welcome rides on its first commit, which adds carol.
        const commitInfo = i === 0 ? { commit_info: { welcome: b64(s.welcome), added: [carol.ref] } } : {};
        expect(await send(alice, T.message, { message: b64(e.commit), ...commitInfo })).toMatchObject([{ type: T.commit, content: { group_id: group, epoch: epoch + 1 } }]);
        expect(await send(alice, T.message, { message: b64(e.commit), ...commitInfo })).toMatchObject([
          { type: T.commit, content: { group_id: group, epoch: epoch + 1, duplicate: true } },
        ]);
        epoch += 1;
        commits += 1;
        const toBob = await bob.inbox.take();
        expect(toBob).toMatchObject([{ type: T.commit, content: { group_id: group, epoch, message: b64(e.commit) } }]);
        if (i === 0) expect(await carol.inbox.take()).toMatchObject([{ type: T.welcome, content: { group_id: group, epoch, welcome: b64(s.welcome) } }]);
      }
      await carol.inbox.take();
      expect(await send(alice, T.message, { message: b64(first) })).toMatchObject([{ type: T.rejected, content: { reason: 'wrong_epoch', group_id: group, epoch } }]);
    }
    expect(commits).toBe(handlingCommit.length * 2 + (random[0]?.epochs.length ?? 0));
    expectNoHandlerErrors(t);
  }, 60_000);
});
