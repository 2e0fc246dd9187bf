import { randomBytes } from 'node:crypto';
import { encodeRequiredCapabilities } from 'ts-mls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mls from '../handlers/mls/index.ts';
import type { HandlerModule } from '../src/sdk/define-handler.ts';
import { TestClient, type SyncResponse } from './support/client.ts';
import { deviceKeysFor, oneTimeKeys } from './support/e2ee-keys.ts';
import { DEFAULT_SUITE, formGroup, isOwnCommit, mlsClaim, mlsTypes, MlsMember, T } from './support/mls-member.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

/**
 * MSC4244 KeyPackages in the keys API, through the mls module's one-time-key algorithm:
 * `mls:<key_id>` one-time keys validated at upload, claimed with the `mls` object, counted in
 * /sync, last-resort packages as the `mls` fallback key; and the group messages in both families.
 */
const SUITE_3 = 'MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519';
const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64').replace(/=+$/, '');

let t: TestApp;
let n = 0;
const member = async (name: string, suite?: typeof SUITE_3): Promise<MlsMember> =>
  MlsMember.of(await TestClient.register(t.app, `${name}${n++}`), suite === undefined ? {} : { suite });

interface KeySync extends SyncResponse {
  device_one_time_keys_count: Record<string, number>;
  device_unused_fallback_key_types: string[];
}

beforeAll(async () => {
  t = await startTestApp({ rate_limits: { keys_claim: { per_second: 0 } } }, [{ module: mls as HandlerModule<unknown>, config: { ciphersuites: [DEFAULT_SUITE, SUITE_3] } }]);
});
afterAll(() => t.close());

async function upload(m: MlsMember, body: Record<string, unknown>) {
  return m.client.json<{ one_time_key_counts?: Record<string, number>; errcode?: string; error?: string }>('POST', '/v3/keys/upload', body);
}

describe('upload', () => {
  it('stores valid KeyPackages as mls one-time keys and counts them in the upload answer and /sync', async () => {
    const alice = await member('alice');
    const res = await upload(alice, { one_time_keys: await alice.mls.mlsKeys(3) });
    expect(res).toEqual({ status: 200, body: { one_time_key_counts: { signed_curve25519: 0, mls: 3 } } });
    const sync = (await alice.client.sync()) as KeySync;
    expect(sync.device_one_time_keys_count).toEqual({ signed_curve25519: 0, mls: 3 });
    await (await member('bob')).claim(alice.client.userId, [alice.client.deviceId]);
    expect(((await alice.client.sync()) as KeySync).device_one_time_keys_count.mls).toBe(2);
  });

  it('refuses the whole upload for one bad KeyPackage, with a Matrix error, storing nothing of it', async () => {
    const alice = await member('alice');
    const { keys, key } = deviceKeysFor(alice.client.userId, alice.client.deviceId);
    const good = await alice.mls.keyPackage();
    const bytes = Buffer.from(good, 'base64');
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0xff; // the package's signature is last
    const wrapped = b64(Buffer.concat([Uint8Array.of(0, 1, 0, 5), Buffer.from(good, 'base64')])); // an MLSMessage, not a bare KeyPackage
    const cases: [unknown, string, RegExp][] = [
      [{ key: b64(bytes) }, 'M_INVALID_PARAM', /bad_signature/],
      [{ key: wrapped }, 'M_INVALID_PARAM', /undecodable/],
      [{ key: 'not base64!' }, 'M_INVALID_PARAM', /undecodable/],
      [{ key: await alice.mls.keyPackage({ identity: `@mallory:${SERVER_NAME}|MALLORY` }) }, 'M_INVALID_PARAM', /wrong_identity/],
      [{ key: await alice.mls.keyPackage({ identity: `${alice.client.userId}|OTHERDEVICE` }) }, 'M_INVALID_PARAM', /wrong_identity/],
      [good, 'M_BAD_JSON', /"key"/],
      [{ nokey: good }, 'M_BAD_JSON', /"key"/],
    ];
    for (const [bad, errcode, error] of cases) {
      for (const field of ['one_time_keys', 'fallback_keys'] as const) {
        const body =
          field === 'one_time_keys'
            ? { device_keys: keys, one_time_keys: { 'mls:good': { key: good }, 'mls:bad': bad, ...oneTimeKeys(alice.client.userId, key, 1) } }
            : { device_keys: keys, one_time_keys: { 'mls:good': { key: good } }, fallback_keys: { 'mls:bad': bad } };
        const res = await upload(alice, body);
        expect(res.status).toBe(400);
        expect(res.body.errcode).toBe(errcode);
        expect(res.body.error).toMatch(error);
        expect(res.body.error).toContain(`${field}.mls:bad`);
      }
    }
    // Nothing of any refused upload was stored: no key, no device keys.
    const sync = (await alice.client.sync()) as KeySync;
    expect(sync.device_one_time_keys_count).toEqual({ signed_curve25519: 0 });
    expect(sync.device_unused_fallback_key_types).toEqual([]);
    const query = await alice.client.json<{ device_keys: Record<string, Record<string, unknown>> }>('POST', '/v3/keys/query', { device_keys: { [alice.client.userId]: [] } });
    expect(query.body.device_keys[alice.client.userId]).toEqual({});
  });

  it('refuses a KeyPackage of a cipher suite the server does not accept', async () => {
    const carol = await MlsMember.of(await TestClient.register(t.app, `carol${n++}`), { suite: 'MLS_128_DHKEMP256_AES128GCM_SHA256_P256' });
    const res = await upload(carol, { one_time_keys: await carol.mls.mlsKeys(1) });
    expect(res.status).toBe(400);
    expect(res.body.error).toMatch(/unsupported_ciphersuite/);
  });
});

describe('claim with the mls object', () => {
  it('hands out only packages of an acceptable cipher suite; none for a device without one', async () => {
    const alice = await member('alice');
    const suite3 = await member('three', SUITE_3);
    await alice.uploadKeyPackages(1);
    await suite3.uploadKeyPackages(1);
    const claimer = await member('claimer');
    expect(await claimer.claim(suite3.client.userId, [suite3.client.deviceId], mlsClaim([DEFAULT_SUITE]))).toEqual({});
    expect(await claimer.claim(alice.client.userId, [alice.client.deviceId], mlsClaim([SUITE_3, 'MLS_NO_SUCH_SUITE']))).toEqual({});
    // Nothing was taken by the refused claims.
    expect(Object.keys(await claimer.claim(suite3.client.userId, [suite3.client.deviceId], mlsClaim([SUITE_3])))).toEqual([suite3.client.deviceId]);
    expect(Object.keys(await claimer.claim(alice.client.userId, [alice.client.deviceId], mlsClaim([DEFAULT_SUITE, SUITE_3])))).toEqual([alice.client.deviceId]);
    // A claim for another protocol version finds nothing.
    await alice.uploadKeyPackages(1);
    expect(await claimer.claim(alice.client.userId, [alice.client.deviceId], { ...mlsClaim(), protocol_version: 'm.mls_20' })).toEqual({});
  });

  it('hands out only packages whose leaf supports the required capabilities (RFC 9420 RequiredCapabilities)', async () => {
    const alice = await member('alice');
    const withExt = await alice.mls.mlsKeys(1, { extensions: [0xff01] });
    const plain = await alice.mls.mlsKeys(1);
    // The plain package sorts first, so a matcher that ignored capabilities would hand it out.
    const plainId = `mls:a${Object.keys(plain)[0]?.slice(4) ?? ''}`;
    const extId = `mls:b${Object.keys(withExt)[0]?.slice(4) ?? ''}`;
    expect((await upload(alice, { one_time_keys: { [plainId]: Object.values(plain)[0], [extId]: Object.values(withExt)[0] } })).status).toBe(200);
    const required = b64(encodeRequiredCapabilities({ extensionTypes: [0xff01], proposalTypes: [], credentialTypes: ['basic'] }));
    const claimer = await member('claimer');
    const device = alice.client.deviceId;
    const first = await claimer.claim(alice.client.userId, [device], mlsClaim([DEFAULT_SUITE], required));
    expect(first[device]).toEqual({ keyId: extId, keyPackage: (Object.values(withExt)[0] as { key: string }).key });
    expect(await claimer.claim(alice.client.userId, [device], mlsClaim([DEFAULT_SUITE], required))).toEqual({});
    // Default extensions and proposals (RFC 9420 §7.2) need not be listed by a leaf.
    const defaults = b64(encodeRequiredCapabilities({ extensionTypes: [2, 3], proposalTypes: [1, 7], credentialTypes: [] }));
    expect((await claimer.claim(alice.client.userId, [device], mlsClaim([DEFAULT_SUITE], defaults)))[device]?.keyId).toBe(plainId);
  });

  it('refuses malformed mls objects with a Matrix error and takes nothing', async () => {
    const alice = await member('alice');
    await alice.uploadKeyPackages(1);
    const one = { [alice.client.userId]: { [alice.client.deviceId]: 'mls' } };
    for (const [mlsObject, errcode] of [
      [{ ...mlsClaim(), required_capabilities: 'AAAAAA' }, 'M_INVALID_PARAM'], // three empty vectors and a trailing byte
      [{ ...mlsClaim(), required_capabilities: '!!' }, 'M_INVALID_PARAM'],
      [{ protocol_version: 'm.mls_10' }, 'M_BAD_JSON'],
      ['mls', 'M_BAD_JSON'],
    ] as const) {
      const res = await alice.client.json<{ errcode: string }>('POST', '/v3/keys/claim', { one_time_keys: one, mls: mlsObject });
      expect([res.status, res.body.errcode]).toEqual([400, errcode]);
    }
    expect(((await alice.client.sync()) as KeySync).device_one_time_keys_count.mls).toBe(1);
  });

  it('without the mls object, hands out any mls key (the plain claim, as other servers do)', async () => {
    const alice = await member('three', SUITE_3);
    await alice.uploadKeyPackages(1);
    expect(Object.keys(await (await member('claimer')).claim(alice.client.userId, [alice.client.deviceId], null))).toEqual([alice.client.deviceId]);
  });

  it('gives concurrent claimers different packages', async () => {
    const alice = await member('alice');
    const keys = await alice.mls.mlsKeys(6);
    expect((await upload(alice, { one_time_keys: keys })).status).toBe(200);
    const claimers = await Promise.all([1, 2, 3, 4, 5, 6].map(() => member('claimer')));
    const claimed = await Promise.all(claimers.map((c) => c.claim(alice.client.userId, [alice.client.deviceId])));
    expect(claimed.map((c) => c[alice.client.deviceId]?.keyId).sort()).toEqual(Object.keys(keys).sort());
  });
});

describe('last-resort packages', () => {
  it('are the mls fallback key: handed out when the one-time packages are gone, again and again, while they match', async () => {
    const alice = await member('alice');
    const oneTime = await alice.mls.mlsKeys(1);
    const lastResort = await alice.mls.mlsKeys(1, { lastResort: true });
    expect((await upload(alice, { one_time_keys: oneTime, fallback_keys: lastResort })).status).toBe(200);
    expect(((await alice.client.sync()) as KeySync).device_unused_fallback_key_types).toEqual(['mls']);
    const claimer = await member('claimer');
    const device = alice.client.deviceId;
    expect((await claimer.claim(alice.client.userId, [device]))[device]?.keyId).toBe(Object.keys(oneTime)[0]);
    for (const _ of [1, 2]) expect((await claimer.claim(alice.client.userId, [device]))[device]?.keyId).toBe(Object.keys(lastResort)[0]);
    const sync = (await alice.client.sync()) as KeySync;
    expect([sync.device_one_time_keys_count.mls, sync.device_unused_fallback_key_types]).toEqual([undefined, []]);
    // Matched like any package: a claim it does not satisfy gets nothing.
    expect(await claimer.claim(alice.client.userId, [device], mlsClaim([SUITE_3]))).toEqual({});
    // A new last-resort package replaces it and is unused again.
    expect((await upload(alice, { fallback_keys: await alice.mls.mlsKeys(1, { lastResort: true }) })).status).toBe(200);
    expect(((await alice.client.sync()) as KeySync).device_unused_fallback_key_types).toEqual(['mls']);
  });
});

describe('group messages in both families', () => {
  it('answers an org.matrix.msc4244 client in that family, and fans out in the family the group was created in', async () => {
    const U = mlsTypes('org.matrix.msc4244');
    const [alice, bob] = [await member('alice'), await member('bob')];
    await formGroup(alice, [bob], randomBytes(16), 'org.matrix.msc4244');
    // Bob writes with the stable name: he is answered in it, Alice hears in the group's family.
    const pending = await bob.mls.commit();
    const toBob = await bob.ask(T.message, { message: pending.message, request_id: 'b' });
    expect(toBob).toEqual([expect.objectContaining({ type: T.commit, content: expect.objectContaining({ request_id: 'b', epoch: 2, sender: bob.ref }) })]);
    expect(isOwnCommit(toBob[0] as never, bob)).toBe(true);
    bob.mls.apply(pending);
    const [toAlice] = await alice.inbox.take();
    expect(toAlice).toMatchObject({ type: U.commit, content: { epoch: 2, message: pending.message, sender: bob.ref } });
    await alice.mls.receive(String(toAlice?.content.message));
    // A refusal goes back in the family the client wrote in.
    const refused = await alice.ask(U.message, { message: 'AAAA' });
    expect(refused).toEqual([expect.objectContaining({ type: U.rejected, content: expect.objectContaining({ reason: 'invalid_message' }) })]);
    const relayed = await alice.mls.encrypt('hi');
    await alice.ask(U.message, { message: relayed });
    expect((await bob.inbox.take()).map((e) => e.type)).toEqual([U.relay]);
  });
});
