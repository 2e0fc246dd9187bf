import { createPublicKey, verify } from 'node:crypto';
import { CollectStrategy, EncryptionSettings, RoomId, UserId } from '@matrix-org/matrix-sdk-crypto-wasm';
import { CrossSigningKey, CryptoEvent } from 'matrix-js-sdk/lib/crypto-api/index.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { canonicalJson } from '../src/shared/canonical-json.ts';
import {
  CryptoClient,
  deleteDeviceWithPassword,
  loginDevice,
  matrixRequest,
  registerUser,
  sendAndReceiveEncrypted,
  verifyWithSas,
  waitFor,
  type Credentials,
  type SyncBody,
} from './support/crypto-client.ts';
import { serveOverHttp } from './support/http-server.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

/**
 * Real matrix-js-sdk 43 clients with the Rust crypto against this server over HTTP: Olm, SAS,
 * cross-signing, one-time and fallback keys, device lists, dehydrated devices. Nothing is mocked.
 *
 * E2EE_HOMESERVER_URL runs the same tests against another homeserver instead (e.g. a Synapse with
 * open registration), which is how the harness itself was checked.
 */
const EXTERNAL = process.env.E2EE_HOMESERVER_URL ?? '';
// Generous: on a loaded 2-core machine each client's WebAssembly crypto competes with the server; the
// harness's own waits (20 s each) name a stuck step long before this.
const TEST_TIMEOUT_MS = 180_000;

let app: TestApp | null = null;
let http: Awaited<ReturnType<typeof serveOverHttp>> | null = null;
let baseUrl = EXTERNAL;

beforeAll(async () => {
  if (EXTERNAL !== '') return;
  app = await startTestApp();
  http = await serveOverHttp(app);
  baseUrl = http.baseUrl;
});
afterAll(async () => {
  await http?.close();
  await app?.close();
});

const running: CryptoClient[] = [];
afterEach(() => {
  for (const c of running.splice(0)) c.stop();
});

let counter = 0;
// Unique per run, so the tests can run again against a long-lived external homeserver.
const username = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${counter++}`;

async function start(creds: Credentials, opts: { secretStorageKey?: Uint8Array } = {}): Promise<CryptoClient> {
  const c = await CryptoClient.start(baseUrl, creds, opts);
  running.push(c);
  return c;
}

/** One user's two devices, each knowing the other's keys. */
async function oneUserTwoDevices(): Promise<{ alice: Credentials; a1: CryptoClient; a2: CryptoClient }> {
  const alice = await registerUser(baseUrl, username('alice'));
  const a1 = await start(alice);
  const a2 = await start(await loginDevice(baseUrl, alice));
  // a1 queried its own user's devices when it started, before a2 existed: it learns of a2 only
  // from its own user in /sync's device_lists.changed, and re-queries.
  await a1.waitForDevices({ [alice.userId]: [a2.deviceId] });
  await a2.waitForDevices({ [alice.userId]: [a1.deviceId] });
  return { alice, a1, a2 };
}

function base64Unpadded(text: string): Buffer {
  return Buffer.from(text, 'base64');
}

/** Checks a Matrix ed25519 signature made by `userId`'s key `keyId` over the object's canonical JSON. */
function signedBy(object: Record<string, unknown>, userId: string, keyId: string, publicKeyBase64: string): boolean {
  const signatures = object.signatures as Record<string, Record<string, string>> | undefined;
  const signature = signatures?.[userId]?.[keyId];
  if (signature === undefined) return false;
  const { signatures: _s, unsigned: _u, ...signed } = object;
  const spki = Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), base64Unpadded(publicKeyBase64)]);
  return verify(null, Buffer.from(canonicalJson(signed)), createPublicKey({ key: spki, format: 'der', type: 'spki' }), base64Unpadded(signature));
}

interface KeysQueryBody {
  device_keys: Record<string, Record<string, Record<string, unknown>>>;
  master_keys?: Record<string, { keys: Record<string, string> }>;
  self_signing_keys?: Record<string, { keys: Record<string, string> }>;
  user_signing_keys?: Record<string, { keys: Record<string, string> }>;
}

const DEHYDRATED_DEVICE = '/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device';

async function queryKeys(token: string, userId: string): Promise<KeysQueryBody> {
  const r = await matrixRequest<KeysQueryBody>(baseUrl, 'POST', '/_matrix/client/v3/keys/query', token, { device_keys: { [userId]: [] } });
  expect(r.status).toBe(200);
  return r.body;
}

/**
 * Alice dehydrates a device; Bob shares a Megolm room key with all her devices (as the Rust crypto
 * does before a room message: the only to-device content a rehydrated device reports back, its
 * other messages being decrypted and dropped inside the crypto); a new device of Alice's rehydrates
 * the dehydrated one and ends up holding Bob's room key.
 *
 * `secret storage` is matrix-js-sdk's public flow (startDehydration, which needs cross-signing and
 * secret storage and keeps its key there). `client-held key` uses the crypto's own
 * DehydratedDeviceManager with the key saved in each device's crypto store, as if the user carried
 * it over: the same device, upload, /events paging and rehydration, without account data.
 */
async function dehydrationRoundTrip(mode: 'secret storage' | 'client-held key'): Promise<void> {
  const aliceCreds = await registerUser(baseUrl, username('alice'));
  const a1 = await start(aliceCreds);
  expect(await a1.crypto.isDehydrationSupported()).toBe(true);
  await a1.bootstrapCrossSigning();
  let recoveryKey: Uint8Array | undefined;
  let dehydrationKey: string | undefined;
  if (mode === 'secret storage') {
    recoveryKey = await a1.setUpSecretStorage();
    expect(await a1.crypto.isSecretStorageReady()).toBe(true);
    await a1.crypto.startDehydration({ createNewKey: true });
  } else {
    dehydrationKey = await a1.dehydrateWithNewKey();
  }
  const dehydrated = await matrixRequest<{ device_id: string; device_data: Record<string, unknown> }>(baseUrl, 'GET', DEHYDRATED_DEVICE, aliceCreds.accessToken);
  expect(dehydrated.status).toBe(200);
  const dehydratedId = dehydrated.body.device_id;
  // Made while a1 held the self-signing key, so the device is cross-signed on the server.
  const selfSigningId = await a1.crypto.getCrossSigningKeyId(CrossSigningKey.SelfSigning);
  const dehydratedKeys = (await queryKeys(aliceCreds.accessToken, aliceCreds.userId)).device_keys[aliceCreds.userId]?.[dehydratedId];
  expect(dehydratedKeys?.dehydrated).toBe(true);
  expect(signedBy(dehydratedKeys!, aliceCreds.userId, `ed25519:${selfSigningId}`, selfSigningId!)).toBe(true);

  const bob = await start(await registerUser(baseUrl, username('bob')));
  await bob.trackUsers([aliceCreds.userId], { [aliceCreds.userId]: [a1.deviceId, dehydratedId] });
  const aliceDevices = (await bob.crypto.getUserDeviceInfo([aliceCreds.userId])).get(aliceCreds.userId);
  expect(aliceDevices?.get(dehydratedId)?.dehydrated).toBe(true);
  // Olm sessions first (claiming the dehydrated device's one-time key), then the room key itself.
  const claimRequest = await bob.olmMachine.getMissingSessions([new UserId(aliceCreds.userId)]);
  if (claimRequest != null) await bob.makeOutgoingRequest(claimRequest);
  const roomId = '!dehydration-test:example.org';
  const settings = new EncryptionSettings();
  settings.sharingStrategy = CollectStrategy.allDevices();
  const shares = await bob.olmMachine.shareRoomKey(new RoomId(roomId), [new UserId(aliceCreds.userId)], settings);
  const sentTo = shares.flatMap((r) => Object.keys((JSON.parse(r.body) as { messages: Record<string, Record<string, unknown>> }).messages[aliceCreds.userId] ?? {}));
  expect(sentTo).toContain(dehydratedId);
  for (const request of shares) await bob.makeOutgoingRequest(request);

  // A new device of Alice's, given the recovery key (or the dehydration key), rehydrates.
  const a3 = await start(await loginDevice(baseUrl, aliceCreds), recoveryKey === undefined ? {} : { secretStorageKey: recoveryKey });
  const progress: [number, number][] = [];
  a3.client.on(CryptoEvent.RehydrationProgress, (roomKeys, toDevice) => progress.push([roomKeys, toDevice]));
  const failures: string[] = [];
  a3.client.on(CryptoEvent.RehydrationError, (message) => failures.push(message));
  let completed = false;
  a3.client.on(CryptoEvent.RehydrationCompleted, () => (completed = true));
  if (mode === 'secret storage') {
    await a3.bootstrapCrossSigning(); // takes the private keys from secret storage
    expect(await a3.crypto.isCrossSigningReady()).toBe(true);
    await a3.crypto.startDehydration({ rehydrate: true });
  } else {
    expect(await a3.rehydrateWithKey(dehydrationKey!)).toBe(true);
  }
  expect(failures).toEqual([]);
  expect(completed).toBe(true);
  const [roomKeys, toDevice] = progress.at(-1) ?? [0, 0];
  expect(roomKeys).toBe(1);
  expect(toDevice).toBe(1);

  const keys = await a3.crypto.exportRoomKeys();
  const bobCurve = (await bob.crypto.getOwnDeviceKeys()).curve25519;
  expect(keys.filter((k) => k.room_id === roomId && k.sender_key === bobCurve)).toHaveLength(1);

  if (mode === 'secret storage') {
    // startDehydration replaced the used device with a fresh one.
    const replaced = await matrixRequest<{ device_id: string }>(baseUrl, 'GET', DEHYDRATED_DEVICE, aliceCreds.accessToken);
    expect(replaced.status).toBe(200);
    expect(replaced.body.device_id).not.toBe(dehydratedId);
  }
}

describe('matrix-js-sdk 43 with the Rust crypto', () => {
  it('one user\'s two devices exchange Olm-encrypted to-device messages both ways', async () => {
    const { a1, a2 } = await oneUserTwoDevices();
    await sendAndReceiveEncrypted(a1, a2, 'from the first device to the second');
    await sendAndReceiveEncrypted(a2, a1, 'from the second device to the first');
  }, TEST_TIMEOUT_MS);

  it('one user\'s two devices complete SAS verification, and each then trusts the other', async () => {
    const { alice, a1, a2 } = await oneUserTwoDevices();
    expect((await a1.crypto.getDeviceVerificationStatus(alice.userId, a2.deviceId))?.localVerified).toBe(false);

    const sides = await verifyWithSas(a1, a2);
    // Both sides derived the same short authentication string from the key exchange.
    expect(sides.initiator.sas.sas.decimal).toEqual(sides.responder.sas.sas.decimal);
    expect(sides.initiator.sas.sas.emoji).toEqual(sides.responder.sas.sas.emoji);
    expect((await a1.crypto.getDeviceVerificationStatus(alice.userId, a2.deviceId))?.localVerified).toBe(true);
    expect((await a2.crypto.getDeviceVerificationStatus(alice.userId, a1.deviceId))?.localVerified).toBe(true);
  }, TEST_TIMEOUT_MS);

  it('two users exchange Olm-encrypted to-device messages both ways, then verify each other with SAS', async () => {
    const alice = await start(await registerUser(baseUrl, username('alice')));
    const bob = await start(await registerUser(baseUrl, username('bob')));
    // With no room in common the Rust crypto tracks only its own user. trackUsers() calls the
    // OlmMachine's updateTrackedUsers([other]) and runs the /keys/query it then queues (the
    // same thing room membership would do); getUserDeviceInfo(…, true) alone downloads keys
    // without tracking, and encryptToDeviceMessages would then find no device.
    await alice.trackUsers([bob.userId], { [bob.userId]: [bob.deviceId] });
    await bob.trackUsers([alice.userId], { [alice.userId]: [alice.deviceId] });

    await sendAndReceiveEncrypted(alice, bob, 'alice to bob');
    await sendAndReceiveEncrypted(bob, alice, 'bob to alice');

    const sides = await verifyWithSas(alice, bob);
    expect(sides.initiator.sas.sas.emoji).toEqual(sides.responder.sas.sas.emoji);
    expect((await alice.crypto.getDeviceVerificationStatus(bob.userId, bob.deviceId))?.localVerified).toBe(true);
    expect((await bob.crypto.getDeviceVerificationStatus(alice.userId, alice.deviceId))?.localVerified).toBe(true);
  }, TEST_TIMEOUT_MS);

  it("SAS completes when one side's MAC is slow to reach the server (verifyWithSas lets no done overtake its MAC)", async () => {
    // One side's MAC PUT held back longer than the other side's MAC takes to arrive: had both
    // sides confirmed at once, the held side's done (sent once that MAC arrived) would reach the
    // server first, and the other side's SAS, which ignores a done before the MAC, would never end.
    const slowMac = (method: string, url: URL) => (method === 'PUT' && url.pathname.includes('/sendToDevice/m.key.verification.mac/') ? 1_000 : 0);
    for (const held of ['initiator', 'responder'] as const) {
      const alice = await start(await registerUser(baseUrl, username('alice')));
      const bob = await start(await registerUser(baseUrl, username('bob')));
      await alice.trackUsers([bob.userId], { [bob.userId]: [bob.deviceId] });
      await bob.trackUsers([alice.userId], { [alice.userId]: [alice.deviceId] });
      (held === 'initiator' ? alice : bob).holdBack = slowMac;
      await verifyWithSas(alice, bob);
      expect((await alice.crypto.getDeviceVerificationStatus(bob.userId, bob.deviceId))?.localVerified).toBe(true);
      expect((await bob.crypto.getDeviceVerificationStatus(alice.userId, alice.deviceId))?.localVerified).toBe(true);
    }
  }, TEST_TIMEOUT_MS);

  it('cross-signing bootstrapped by one device; a second device verified with SAS is cross-signed', async () => {
    const alice = await registerUser(baseUrl, username('alice'));
    const a1 = await start(alice);
    await a1.bootstrapCrossSigning();
    expect(await a1.crypto.isCrossSigningReady()).toBe(true);
    const masterId = await a1.crypto.getCrossSigningKeyId();
    const selfSigningId = await a1.crypto.getCrossSigningKeyId(CrossSigningKey.SelfSigning);
    expect(masterId).not.toBeNull();
    expect(selfSigningId).not.toBeNull();

    // What the server stored: the three public keys, and a1's device signed by the self-signing key.
    const q = await queryKeys(alice.accessToken, alice.userId);
    expect(Object.values(q.master_keys?.[alice.userId]?.keys ?? {})).toEqual([masterId]);
    expect(Object.values(q.self_signing_keys?.[alice.userId]?.keys ?? {})).toEqual([selfSigningId]);
    expect(Object.keys(q.user_signing_keys?.[alice.userId]?.keys ?? {})).toHaveLength(1);
    const a1Keys = q.device_keys[alice.userId]?.[a1.deviceId];
    expect(a1Keys).toBeDefined();
    expect(signedBy(a1Keys!, alice.userId, `ed25519:${selfSigningId}`, selfSigningId!)).toBe(true);

    const a2 = await start(await loginDevice(baseUrl, alice));
    await a1.waitForDevices({ [alice.userId]: [a2.deviceId] });
    expect((await a1.crypto.getDeviceVerificationStatus(alice.userId, a2.deviceId))?.crossSigningVerified).toBe(false);

    // On "done", a1 (holding the self-signing key) signs a2 and uploads the signature with
    // /keys/signatures/upload; a2 learns to trust the master key from the SAS MACs.
    await verifyWithSas(a1, a2);
    // The signature counts once a1 has it back from the server: after the upload, the server
    // lists alice in device_lists.changed and a1 re-queries.
    await a1.waitUntil('to see a2 cross-signed', async () => (await a1.crypto.getDeviceVerificationStatus(alice.userId, a2.deviceId))?.crossSigningVerified === true);
    await a2.waitUntil('to trust its own identity', async () => (await a2.crypto.getUserVerificationStatus(alice.userId)).isCrossSigningVerified());
    await a2.waitUntil('to see itself cross-signed', async () => (await a2.crypto.getDeviceVerificationStatus(alice.userId, a2.deviceId))?.crossSigningVerified === true);

    const a2Keys = (await queryKeys(alice.accessToken, alice.userId)).device_keys[alice.userId]?.[a2.deviceId];
    expect(a2Keys).toBeDefined();
    expect(signedBy(a2Keys!, alice.userId, `ed25519:${selfSigningId}`, selfSigningId!)).toBe(true);

    // Another user's client sees a2 signed by its owner from what the server serves alone.
    const bob = await start(await registerUser(baseUrl, username('bob')));
    await bob.trackUsers([alice.userId], { [alice.userId]: [a1.deviceId, a2.deviceId] });
    expect((await bob.crypto.getDeviceVerificationStatus(alice.userId, a2.deviceId))?.signedByOwner).toBe(true);
    expect(Object.values((await bob.crypto.getUserCrossSigningKeys(alice.userId))?.master_key?.keys ?? {})).toEqual([masterId]);
  }, TEST_TIMEOUT_MS);

  it('one-time keys are claimed until the fallback key is served, with /sync counting down', async () => {
    const carol = await registerUser(baseUrl, username('carol'));
    const c = await start(carol);
    const own = await c.crypto.getOwnDeviceKeys();
    // Stopped, so that it does not replace the keys being claimed (it would, on seeing the count fall).
    c.stop();
    const claimer = await registerUser(baseUrl, username('dave'));

    const countsNow = async () => {
      const r = await matrixRequest<SyncBody>(baseUrl, 'GET', '/_matrix/client/v3/sync?timeout=0', carol.accessToken);
      expect(r.status).toBe(200);
      return { otks: r.body.device_one_time_keys_count?.signed_curve25519 ?? 0, unusedFallback: r.body.device_unused_fallback_key_types };
    };
    const claim = async () => {
      const r = await matrixRequest<{ one_time_keys: Record<string, Record<string, Record<string, Record<string, unknown>>>>; failures?: Record<string, unknown> }>(
        baseUrl,
        'POST',
        '/_matrix/client/v3/keys/claim',
        claimer.accessToken,
        { one_time_keys: { [carol.userId]: { [carol.deviceId]: 'signed_curve25519' } } },
      );
      expect(r.status).toBe(200);
      const keys = Object.entries(r.body.one_time_keys[carol.userId]?.[carol.deviceId] ?? {});
      expect(keys).toHaveLength(1);
      const [keyId, key] = keys[0]!;
      expect(keyId.startsWith('signed_curve25519:')).toBe(true);
      // Every key, one-time or fallback, is as the device signed it.
      expect(signedBy(key, carol.userId, `ed25519:${carol.deviceId}`, own.ed25519)).toBe(true);
      return { keyId, key };
    };

    const initial = await countsNow();
    expect(initial.otks).toBeGreaterThan(0);
    expect(initial.unusedFallback).toEqual(['signed_curve25519']);

    // Keys compared by value: the Rust crypto numbers its fallback keys apart from its one-time
    // keys, so a fallback key's id can equal a one-time key's.
    const seen = new Set<unknown>();
    for (let left = initial.otks - 1; left >= 0; left--) {
      const { key } = await claim();
      expect(key.fallback).toBeUndefined();
      expect(seen.has(key.key)).toBe(false);
      seen.add(key.key);
      expect(await countsNow()).toEqual({ otks: left, unusedFallback: ['signed_curve25519'] });
    }

    const fallback = await claim();
    expect(fallback.key.fallback).toBe(true);
    expect(seen.has(fallback.key.key)).toBe(false);
    // Once handed out the fallback key is no longer unused, but it keeps being served.
    expect(await countsNow()).toEqual({ otks: 0, unusedFallback: [] });
    const again = await claim();
    expect(again.keyId).toBe(fallback.keyId);
    expect(again.key).toEqual(fallback.key);
  }, TEST_TIMEOUT_MS);

  it('a tracked user\'s new device shows in /sync device_lists.changed and /keys/changes; deleted, it leaves /keys/query', async () => {
    const aliceCreds = await registerUser(baseUrl, username('alice'));
    const a1 = await start(aliceCreds);
    const bob = await start(await registerUser(baseUrl, username('bob')));
    await bob.trackUsers([aliceCreds.userId], { [aliceCreds.userId]: [a1.deviceId] });
    const before = bob.lastSyncToken();
    const mark = bob.syncResponses.length;

    const a2 = await start(await loginDevice(baseUrl, aliceCreds));
    await bob.waitForSyncResponse(`device_lists.changed ∋ ${aliceCreds.userId}`, (s) => s.device_lists?.changed?.includes(aliceCreds.userId) === true, mark);
    await bob.waitForDevices({ [aliceCreds.userId]: [a1.deviceId, a2.deviceId] });
    const after = bob.lastSyncToken();
    const changes = await matrixRequest<{ changed: string[]; left: string[] }>(
      baseUrl,
      'GET',
      `/_matrix/client/v3/keys/changes?from=${encodeURIComponent(before)}&to=${encodeURIComponent(after)}`,
      bob.creds.accessToken,
    );
    expect(changes.status).toBe(200);
    expect(changes.body.changed).toContain(aliceCreds.userId);

    a2.stop();
    const mark2 = bob.syncResponses.length;
    await deleteDeviceWithPassword(baseUrl, aliceCreds, a2.deviceId);
    await bob.waitForSyncResponse(`device_lists.changed ∋ ${aliceCreds.userId} after the deletion`, (s) => s.device_lists?.changed?.includes(aliceCreds.userId) === true, mark2);
    const q = await queryKeys(bob.creds.accessToken, aliceCreds.userId);
    expect(Object.keys(q.device_keys[aliceCreds.userId] ?? {})).toEqual([a1.deviceId]);
    // Bob's crypto re-queried on that change and dropped the device.
    await waitFor(
      'bob\'s crypto to forget the deleted device',
      (wake) => {
        bob.client.on(CryptoEvent.DevicesUpdated, wake);
        return () => bob.client.off(CryptoEvent.DevicesUpdated, wake);
      },
      async () => {
        await bob.processOutgoingRequests();
        const devices = (await bob.crypto.getUserDeviceInfo([aliceCreds.userId])).get(aliceCreds.userId);
        return devices !== undefined && !devices.has(a2.deviceId) ? true : undefined;
      },
      20_000,
      bob.diagnostics,
    );
  }, TEST_TIMEOUT_MS);

  it('a room key sent to a dehydrated device is read on rehydration (MSC3814; the dehydration key held by the client)', async () => {
    await dehydrationRoundTrip('client-held key');
  }, TEST_TIMEOUT_MS);

  // matrix-js-sdk's public flow, startDehydration, keeps the dehydration key in secret storage,
  // which lives in account data: PUT /user/{userId}/account_data/{type}, each write awaited until it
  // comes back in /sync's account_data. This server has no account data (the PUT is 404
  // M_UNRECOGNIZED), so the flow stops at bootstrapSecretStorage; the test above drives the same
  // MSC3814 endpoints through the crypto's own dehydrated-device manager instead.
  it.skip('a room key sent to a dehydrated device is read on rehydration (MSC3814; startDehydration with secret storage; needs account data)', async () => {
    await dehydrationRoundTrip('secret storage');
  }, TEST_TIMEOUT_MS);
});
