import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import franking from '../handlers/franking/index.ts';
import mls from '../handlers/mls/index.ts';
import type { HandlerModule } from '../src/sdk/define-handler.ts';
import { DISPATCH_COUNTER } from '../src/server-user/dispatcher.ts';
import { TestClient } from './support/client.ts';
import { mlsClaim, mlsTypes, MlsMember, T } from './support/mls-member.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

const F = 'org.example.franking';
const U = mlsTypes('org.matrix.msc4244');
// The retired to-device KeyPackage directory: still answered (M_UNRECOGNIZED), so still fuzzed.
const RETIRED = ['upload', 'claim', 'count'].map((x) => `org.matrix.msc4244.key_packages.${x}`) as [string, string, string];
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64').replace(/=+$/, '');

/** Bit flips, truncations and extensions of a real message: what a fuzzer would try first. */
function mangled(text: string): string[] {
  const bytes = Buffer.from(text, 'base64');
  const out: string[] = [];
  for (const cut of [1, 2, 5, Math.floor(bytes.length / 2), bytes.length - 1]) out.push(b64(bytes.subarray(0, cut)));
  for (let i = 0; i < bytes.length; i += Math.max(1, Math.floor(bytes.length / 12))) {
    const flipped = Buffer.from(bytes);
    flipped[i] = (flipped[i] ?? 0) ^ 0xff;
    out.push(b64(flipped));
  }
  out.push(b64(Buffer.concat([bytes, Buffer.from([0])])), b64(Buffer.concat([Buffer.from([0, 1]), bytes])));
  return out;
}

let t: TestApp;
let alice: MlsMember;
let bob: MlsMember;

beforeAll(async () => {
  t = await startTestApp({ rate_limits: { keys_claim: { per_second: 0 } } }, [
    { module: mls as HandlerModule<unknown> },
    { module: franking as HandlerModule<unknown>, config: { moderators: [`@alice0:${SERVER_NAME}`] } },
  ]);
  alice = await MlsMember.of(await TestClient.register(t.app, 'alice0'));
  bob = await MlsMember.of(await TestClient.register(t.app, 'bob0'));
});
afterAll(() => t.close());

describe('hostile input to the mls and franking handlers', () => {
  it('is answered or dropped, never a handler error, a timeout or a non-200', async () => {
    await bob.uploadKeyPackages(1);
    const bobPackage = (await alice.claim(bob.client.userId, [bob.client.deviceId]))[bob.client.deviceId]?.keyPackage ?? '';
    await alice.mls.createGroup(randomBytes(16));
    const commit = await alice.mls.commit([bobPackage]);
    const application = await alice.mls.encrypt('x');
    const keyPackage = await alice.mls.keyPackage();
    const garbage = [1, 2, 3, 4, 16, 64, 300].map((n) => b64(randomBytes(n)));
    const encoded = [...garbage, ...mangled(commit.message), ...mangled(application), ...mangled(keyPackage), ...mangled(commit.welcome ?? '')];
    // (Floats and integers beyond 2^53 never reach a handler: canonical JSON refuses them with 400 M_BAD_JSON.)
    const notObjects = [null, 1, 'x', [], true, -1, Number.MAX_SAFE_INTEGER, { nested: {} }];

    const messages: [string, Record<string, unknown>][] = [];
    for (const type of [...RETIRED, T.message, U.message, `${F}.frank`, `${F}.keys`, `${F}.report`, `${F}.list_reports`, `${F}.rotate_key`]) {
      messages.push([type, {}]);
      for (const value of notObjects) {
        messages.push([type, { key_packages: value, last_resort: value, user_id: value, message: value, commit_info: value, franking_tag: value, since: value, limit: value }]);
      }
    }
    for (const text of encoded) {
      messages.push([RETIRED[0], { key_packages: [text], last_resort: text }]);
      messages.push([T.message, { message: text }]);
      messages.push([T.message, { message: commit.message, commit_info: { welcome: text, added: [bob.ref] } }]);
      messages.push([`${F}.frank`, { franking_tag: text, context: bob.client.userId }]);
      messages.push([
        `${F}.report`,
        { message: 'm', franking_key: text, franking_tag: text, context: alice.client.userId, sender: 'x', accepted_ts: 0, key_version: 1, server_frank: text },
      ]);
    }
    messages.push([RETIRED[1], { user_id: '@:x', ciphersuite: 'nope' }], [RETIRED[1], { user_id: `@${'a'.repeat(250)}:x` }]);
    messages.push([T.message, { message: commit.message, commit_info: { added: [{ user_id: '@a:b', device_id: 'x'.repeat(255) }], welcome: 'AAAA' } }]);
    messages.push([`${F}.report`, { message: 'm', franking_key: 'AA', context: '@', sender: '', accepted_ts: Number.MAX_SAFE_INTEGER, key_version: 2 ** 31 - 1, server_frank: 'AA' }]);
    messages.push([`${F}.list_reports`, { since: Number.MAX_SAFE_INTEGER, limit: 100 }]);

    for (const [type, content] of messages) {
      expect({ type, content, status: await alice.send(type, content) }).toMatchObject({ status: 200 });
    }
    for (const type of new Set(messages.map(([type]) => type))) {
      for (const outcome of ['error', 'timeout']) expect({ type, outcome, n: t.services.counters.get(DISPATCH_COUNTER, { type, outcome }) }).toMatchObject({ n: 0 });
    }
    // The keys API with the module's algorithm: every mangled KeyPackage and claim object is a
    // 400 (or, when mangling left a valid package, 200), never a server error.
    for (const text of [...encoded, b64(randomBytes(2000))]) {
      const res = await alice.client.json('POST', '/v3/keys/upload', { one_time_keys: { [`mls:h${b64(randomBytes(6)).replace(/[+/]/g, '_')}`]: { key: text } } });
      expect({ text, status: res.status }).toMatchObject({ status: expect.toSatisfy((x: number) => x === 200 || x === 400) });
    }
    for (const value of [...notObjects, ...encoded.slice(0, 20)]) {
      for (const mlsObject of [value, { ...mlsClaim(), required_capabilities: value }, { ...mlsClaim(), acceptable_ciphersuites: value }, { ...mlsClaim(), protocol_version: value }]) {
        const res = await alice.client.json('POST', '/v3/keys/claim', { one_time_keys: { [bob.client.userId]: { [bob.client.deviceId]: 'mls' } }, mls: mlsObject });
        expect({ mlsObject, status: res.status }).toMatchObject({ status: expect.toSatisfy((x: number) => x === 200 || x === 400) });
      }
    }
    // Still serving, and still ordering: a fresh group's first commit is accepted.
    while ((await alice.inbox.take()).length > 0);
    await bob.uploadKeyPackages(1);
    const carol = await MlsMember.of(await TestClient.register(t.app, 'carol0'));
    await carol.mls.createGroup(randomBytes(16));
    const fresh = await carol.mls.commit([(await carol.claim(bob.client.userId, [bob.client.deviceId]))[bob.client.deviceId]?.keyPackage ?? '']);
    const replies = await carol.ask(T.message, { message: fresh.message, commit_info: { welcome: fresh.welcome, added: [bob.ref] } });
    expect(replies).toMatchObject([{ type: T.commit, content: { epoch: 1, sender: carol.ref } }]);
  }, 120_000);
});
