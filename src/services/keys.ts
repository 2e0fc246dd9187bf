import { MatrixError } from '../errors/matrix-error.ts';
import { parseUserId } from '../shared/user-id.ts';
import type { Db } from '../storage/drivers/database.ts';
import { E2eKeysStore, OneTimeKeyConflict, type ClaimedKey, type ClaimRequest, type KeyCounts, type StoredKey } from '../storage/e2e-keys-store.ts';
import type { DeviceLists } from './device-lists.ts';
import { KeyAlgorithms, metadataOf, NO_CLAIM_PARAMS, type ClaimParams } from './key-algorithms.ts';
import { GroupCommit } from '../runtime/group-commit.ts';
import { KeyCountsCache } from '../runtime/key-counts-cache.ts';
import { uploadSignatures } from './key-signatures.ts';
import {
  canonicalOrRefuse,
  checkCrossSigningKey,
  checkRequestSize,
  checkDeviceKeys,
  CROSS_SIGNING_TYPES,
  hasValidSignature,
  isObject,
  publicKeyIdOf,
  splitKeyId,
  withSignatures,
  type CrossSigningType,
  type JsonObject,
} from './key-checks.ts';

/** Most one-time plus fallback keys in one upload (clients upload 50 at a time). */
export const MAX_KEYS_PER_UPLOAD = 1_000;

export interface KeysUploadInput {
  userId: string;
  deviceId: string;
  deviceKeys?: unknown;
  oneTimeKeys?: Record<string, unknown>;
  fallbackKeys?: Record<string, unknown>;
}

/** With several processes, how long a device's cached key counts may lag a claim made elsewhere. */
const COUNTS_TTL_MS = 1_000;

/** Claim statements in flight at once per process (batches gather what arrives meanwhile). */
const CLAIM_CONCURRENCY = 2;
/** Most one-time keys claimed in one statement (one request naming more devices goes alone). */
const MAX_CLAIMS_PER_BATCH = 1_000;

/** How long a client's key query or claim waits for other servers unless it says (spec default). */
export const DEFAULT_FEDERATION_TIMEOUT_MS = 10_000;

interface LocalKeys {
  device_keys: KeyMap;
  master_keys: Record<string, JsonObject>;
  self_signing_keys: Record<string, JsonObject>;
  user_signing_keys: Record<string, JsonObject>;
}

/** What other servers answered about their users' keys (see FederatedKeys). */
export interface RemoteQueryResult {
  deviceKeys: Record<string, Record<string, JsonObject>>;
  masterKeys: Record<string, JsonObject>;
  selfSigningKeys: Record<string, JsonObject>;
  failures: Record<string, JsonObject>;
}

/** Queries and claims of keys of users on other servers. */
export interface RemoteKeysSource {
  query(deviceKeys: Record<string, readonly string[]>, timeoutMs: number): Promise<RemoteQueryResult>;
  /** `params.raw` goes into the body beside `one_time_keys` (MSC4244's `mls` object). */
  claim(oneTimeKeys: Record<string, Record<string, string>>, timeoutMs: number, params: ClaimParams): Promise<{ oneTimeKeys: Record<string, Record<string, Record<string, unknown>>>; failures: Record<string, JsonObject> }>;
}

export interface KeysServiceDeps {
  db: Db;
  serverName: string;
  deviceLists: DeviceLists;
  /** Tells other processes whose key counts changed (PostgreSQL NOTIFY). */
  publishCountsChanged?: (devices: { userId: string; deviceId: string }[]) => void;
}

type KeyMap = Record<string, Record<string, JsonObject>>;

/**
 * The client-server "End-to-end encryption" module for this server's users: device keys,
 * one-time and fallback keys, cross-signing keys and signatures, and what /sync says of them.
 */
export class KeysService {
  private readonly store: E2eKeysStore;
  readonly counts: KeyCountsCache;
  /** Other servers' keys; null while federation is off (their users are then in `failures`). */
  remote: RemoteKeysSource | null = null;
  /** The one-time-key algorithms handler modules contribute (set once modules are loaded). */
  algorithms = new KeyAlgorithms();
  /**
   * Concurrent claims share statements (see GroupCommit): many clients claiming one device's
   * keys at once cost one statement and one commit per batch instead of one each.
   */
  private readonly claims: GroupCommit<ClaimRequest, ClaimedKey | null>;

  constructor(private readonly deps: KeysServiceDeps) {
    this.store = new E2eKeysStore(deps.db);
    this.claims = new GroupCommit({
      flush: (requests) => this.store.claim(requests),
      concurrency: CLAIM_CONCURRENCY,
      maxItems: MAX_CLAIMS_PER_BATCH,
      maxWeight: MAX_CLAIMS_PER_BATCH,
      weightOf: () => 1,
      keyOf: () => null,
    });
    // Several processes (PostgreSQL): claims elsewhere are not announced, see KeyCountsCache.
    this.counts = new KeyCountsCache(deps.publishCountsChanged === undefined ? Number.POSITIVE_INFINITY : COUNTS_TTL_MS);
  }

  private isLocal(userId: string): boolean {
    return parseUserId(userId)?.serverName === this.deps.serverName;
  }

  /** POST /keys/upload: checks everything first, then stores all of it or nothing. */
  async upload(input: KeysUploadInput): Promise<Record<string, number>> {
    const { userId, deviceId } = input;
    const deviceKeysJson = input.deviceKeys === undefined || input.deviceKeys === null ? null : checkDeviceKeys(input.deviceKeys, userId, deviceId);
    const oneTimeKeys = keysOf(input.oneTimeKeys ?? {}, 'one_time_keys');
    const fallbackKeys = keysOf(input.fallbackKeys ?? {}, 'fallback_keys');
    if (oneTimeKeys.length + fallbackKeys.length > MAX_KEYS_PER_UPLOAD) {
      throw new MatrixError('M_TOO_LARGE', `At most ${MAX_KEYS_PER_UPLOAD} one-time and fallback keys per upload`);
    }
    if (new Set(fallbackKeys.map((k) => k.algorithm)).size !== fallbackKeys.length) {
      throw new MatrixError('M_INVALID_PARAM', 'fallback_keys: one key per algorithm');
    }
    // Every key a module validates is checked before anything is stored: one refusal refuses all.
    const metadata = await this.algorithms.check(userId, deviceId, [...oneTimeKeys.map((k) => ({ ...k, fallback: false })), ...fallbackKeys.map((k) => ({ ...k, fallback: true }))]);
    oneTimeKeys.forEach((k, i) => (k.metadata = metadata[i] ?? null));
    fallbackKeys.forEach((k, i) => (k.metadata = metadata[oneTimeKeys.length + i] ?? null));
    let result;
    try {
      result = await this.store.upload({ userId, deviceId, deviceKeysJson, oneTimeKeys, fallbackKeys });
    } catch (e) {
      if (e instanceof OneTimeKeyConflict) {
        throw new MatrixError('M_INVALID_PARAM', `One time key ${e.keyId} already exists with other contents; a key id cannot be reused for another key`);
      }
      throw e;
    }
    this.countsChanged([{ userId, deviceId }]);
    if (result.deviceKeysChanged !== null) await this.deps.deviceLists.changed(result.deviceKeysChanged, [userId]);
    return countsJson(result.counts);
  }

  /** The counts /sync reports for a device (cached between uploads and claims). */
  countsFor(userId: string, deviceId: string): Promise<KeyCounts> {
    return this.counts.get(userId, deviceId, () => this.store.counts(userId, deviceId));
  }

  private countsChanged(devices: { userId: string; deviceId: string }[]): void {
    if (devices.length === 0) return;
    this.counts.forget(devices);
    this.deps.publishCountsChanged?.(devices);
  }

  /**
   * POST /keys/query: local users from the database, users of other servers from their servers
   * (one request per server, all at once, within `timeoutMs`; see FederatedKeys). The requester
   * tracks every user it asked about.
   */
  async query(requester: string, deviceKeys: Record<string, readonly string[]>, timeoutMs = DEFAULT_FEDERATION_TIMEOUT_MS): Promise<JsonObject> {
    const users = Object.keys(deviceKeys);
    checkRequestSize(users.length, Object.values(deviceKeys).reduce((n, d) => n + d.length, 0));
    const local = users.filter((u) => this.isLocal(u));
    const remote = users.filter((u) => !this.isLocal(u) && parseUserId(u) !== null);
    await this.deps.deviceLists.track(requester, users.filter((u) => parseUserId(u) !== null));
    const [mine, theirs] = await Promise.all([
      this.localKeys(requester, Object.fromEntries(local.map((u) => [u, deviceKeys[u] ?? []]))),
      this.remoteQuery(Object.fromEntries(remote.map((u) => [u, deviceKeys[u] ?? []])), timeoutMs),
    ]);
    return {
      device_keys: { ...mine.device_keys, ...theirs.deviceKeys },
      master_keys: { ...mine.master_keys, ...theirs.masterKeys },
      self_signing_keys: { ...mine.self_signing_keys, ...theirs.selfSigningKeys },
      user_signing_keys: mine.user_signing_keys,
      failures: theirs.failures,
    };
  }

  private remoteQuery(deviceKeys: Record<string, readonly string[]>, timeoutMs: number): Promise<RemoteQueryResult> {
    if (Object.keys(deviceKeys).length === 0) return Promise.resolve({ deviceKeys: {}, masterKeys: {}, selfSigningKeys: {}, failures: {} });
    if (this.remote === null) return Promise.resolve({ deviceKeys: {}, masterKeys: {}, selfSigningKeys: {}, failures: unreachable(Object.keys(deviceKeys)) });
    return this.remote.query(deviceKeys, timeoutMs);
  }

  /**
   * /user/keys/query from another server: our users' keys (no user-signing keys, and only the
   * users' own signatures), and that server now follows their device lists.
   */
  async queryForServer(origin: string, deviceKeys: Record<string, readonly string[]>): Promise<JsonObject> {
    const users = Object.keys(deviceKeys).filter((u) => this.isLocal(u));
    checkRequestSize(users.length, users.reduce((n, u) => n + (deviceKeys[u]?.length ?? 0), 0));
    await this.deps.deviceLists.trackRemotely(origin, users);
    const answer = await this.localKeys('', Object.fromEntries(users.map((u) => [u, deviceKeys[u] ?? []])));
    return { device_keys: answer.device_keys, master_keys: answer.master_keys, self_signing_keys: answer.self_signing_keys };
  }

  /** /user/devices/{userId} from another server: the whole list with its stream position. */
  async devicesForServer(origin: string, userId: string): Promise<JsonObject> {
    if (!this.isLocal(userId)) throw new MatrixError('M_INVALID_PARAM', 'That user is not on this server');
    await this.deps.deviceLists.trackRemotely(origin, [userId]);
    const [answer, positions] = await Promise.all([this.localKeys('', { [userId]: [] }), this.deps.deviceLists.userPositions([userId])]);
    const devices = Object.entries(answer.device_keys[userId] ?? {}).map(([deviceId, keys]) => {
      const name = isObject(keys.unsigned) ? keys.unsigned.device_display_name : undefined;
      return { device_id: deviceId, keys, ...(typeof name === 'string' ? { device_display_name: name } : {}) };
    });
    const master = answer.master_keys[userId];
    const selfSigning = answer.self_signing_keys[userId];
    return {
      user_id: userId,
      stream_id: positions.get(userId) ?? 0,
      devices,
      ...(master === undefined ? {} : { master_key: master }),
      ...(selfSigning === undefined ? {} : { self_signing_key: selfSigning }),
    };
  }

  /** Our users' keys as `viewer` may see them (user-signing keys and signatures only their own). */
  private async localKeys(viewer: string, deviceKeys: Record<string, readonly string[]>): Promise<LocalKeys> {
    const local = Object.keys(deviceKeys);
    const [devices, crossSigning, signatures] = await Promise.all([
      this.store.deviceKeys(local.map((u) => ({ userId: u, deviceIds: deviceKeys[u] ?? [] }))),
      this.store.crossSigningKeys(local),
      this.store.signaturesOn(local, viewer),
    ]);
    const sigsOn = (userId: string, keyId: string) => signatures.filter((s) => s.targetUserId === userId && s.targetKeyId === keyId);
    const out: KeyMap = Object.fromEntries(local.map((u) => [u, {}]));
    for (const d of devices) {
      const unsigned = d.displayName === null ? {} : { device_display_name: d.displayName };
      (out[d.userId] ??= {})[d.deviceId] = withSignatures(d.keyJson, sigsOn(d.userId, d.deviceId), unsigned);
    }
    const master: Record<string, JsonObject> = {};
    const selfSigning: Record<string, JsonObject> = {};
    const userSigning: Record<string, JsonObject> = {};
    for (const [userId, keys] of crossSigning) {
      for (const [type, json] of keys) {
        const pub = publicKeyIdOf(json).slice('ed25519:'.length);
        const key = withSignatures(json, sigsOn(userId, pub));
        if (type === 'master') master[userId] = key;
        else if (type === 'self_signing') selfSigning[userId] = key;
        else if (type === 'user_signing' && userId === viewer) userSigning[userId] = key;
      }
    }
    return { device_keys: out, master_keys: master, self_signing_keys: selfSigning, user_signing_keys: userSigning };
  }

  /**
   * POST /keys/claim: each one-time key goes to one claimer only; other servers' users through
   * their servers (with `params`, the claim parameters of key algorithms, forwarded as sent).
   */
  async claim(oneTimeKeys: Record<string, Record<string, string>>, timeoutMs = DEFAULT_FEDERATION_TIMEOUT_MS, params: ClaimParams = NO_CLAIM_PARAMS): Promise<JsonObject> {
    checkRequestSize(Object.keys(oneTimeKeys).length, Object.values(oneTimeKeys).reduce((n, d) => n + Object.keys(d).length, 0));
    const local: Record<string, Record<string, string>> = {};
    const remote: Record<string, Record<string, string>> = {};
    for (const [userId, devices] of Object.entries(oneTimeKeys)) {
      if (this.isLocal(userId)) local[userId] = devices;
      else if (parseUserId(userId) !== null) remote[userId] = devices;
    }
    const [mine, theirs] = await Promise.all([
      this.claimLocal(local, params),
      Object.keys(remote).length === 0
        ? { oneTimeKeys: {}, failures: {} }
        : this.remote === null
          ? { oneTimeKeys: {}, failures: unreachable(Object.keys(remote)) }
          : this.remote.claim(remote, timeoutMs, params),
    ]);
    return { one_time_keys: { ...mine, ...theirs.oneTimeKeys }, failures: theirs.failures };
  }

  /** Claims of our users' keys, for our clients and for other servers (/user/keys/claim). */
  async claimLocal(oneTimeKeys: Record<string, Record<string, string>>, params: ClaimParams = NO_CLAIM_PARAMS): Promise<Record<string, Record<string, Record<string, unknown>>>> {
    const plain: ClaimRequest[] = [];
    const matched: { request: ClaimRequest; matches: (key: { keyId: string; keyJson: string; metadata: string | null }) => boolean }[] = [];
    let count = 0;
    for (const [userId, devices] of Object.entries(oneTimeKeys)) {
      if (!this.isLocal(userId)) continue;
      for (const [deviceId, algorithm] of Object.entries(devices)) {
        count++;
        const matcher = this.algorithms.matcher(algorithm, params);
        // Keys without claim parameters go out by the one-statement claim; the others need a
        // module to say which key fits, so they take a read and a delete each (store.claimMatching).
        if (matcher === null) plain.push({ userId, deviceId, algorithm });
        else {
          const matches = (k: { keyId: string; keyJson: string; metadata: string | null }) => matcher({ keyId: k.keyId, key: JSON.parse(k.keyJson) as unknown, metadata: metadataOf(k.metadata) });
          matched.push({ request: { userId, deviceId, algorithm }, matches });
        }
      }
    }
    checkRequestSize(Object.keys(oneTimeKeys).length, count);
    const claimed = (await this.claims.runAll(plain)).filter((k): k is ClaimedKey => k !== null);
    for (const { request, matches } of matched) {
      const key = await this.store.claimMatching(request, matches);
      if (key !== null) claimed.push(key);
    }
    const out: Record<string, Record<string, Record<string, unknown>>> = {};
    for (const k of claimed) ((out[k.userId] ??= {})[k.deviceId] ??= {})[`${k.algorithm}:${k.keyId}`] = JSON.parse(k.keyJson) as unknown;
    // Forgotten here only: see KeyCountsCache for why other processes are not told of claims.
    if (claimed.length > 0) this.counts.forget(claimed.map((k) => ({ userId: k.userId, deviceId: k.deviceId })));
    return out;
  }

  /** Whether the user has a master key yet (MSC3967: the first upload needs no re-authentication). */
  async crossSigningUploadNeedsAuth(userId: string, body: Partial<Record<CrossSigningType, unknown>>): Promise<boolean> {
    const existing = (await this.store.crossSigningKeys([userId])).get(userId);
    if (existing?.get('master') === undefined) return false;
    // Uploading exactly what is stored changes nothing, so it needs no proof either (as Synapse).
    return CROSS_SIGNING_TYPES.some((t) => body[t] !== undefined && canonicalOrRefuse(body[t], `${t}_key`) !== existing.get(t));
  }

  /** POST /keys/device_signing/upload, after user-interactive auth where it is needed. */
  async uploadCrossSigning(userId: string, body: Partial<Record<CrossSigningType, unknown>>): Promise<void> {
    const given = CROSS_SIGNING_TYPES.filter((t) => body[t] !== undefined && body[t] !== null);
    const checked = new Map(given.map((t) => [t, checkCrossSigningKey(body[t], userId, t)]));
    const stored = (await this.store.crossSigningKeys([userId])).get(userId);
    const storedMaster = stored?.get('master');
    const master = checked.get('master') ?? (storedMaster === undefined ? undefined : checkCrossSigningKey(JSON.parse(storedMaster), userId, 'master'));
    for (const t of ['self_signing', 'user_signing'] as const) {
      const key = checked.get(t);
      if (key === undefined) continue;
      if (master === undefined) throw new MatrixError('M_INVALID_PARAM', `${t}_key needs a master key: upload master_key first or with it`);
      if (!hasValidSignature(JSON.parse(key.json) as JsonObject, userId, master.keyId, master.publicKey)) {
        throw new MatrixError('M_INVALID_SIGNATURE', `${t}_key must be signed by the master key ${master.keyId}`);
      }
    }
    if (checked.size === 0) return;
    const position = await this.store.setCrossSigningKeys(userId, [...checked].map(([keyType, k]) => ({ keyType, keyJson: k.json })));
    await this.deps.deviceLists.changed(position, [userId]);
  }

  /** POST /keys/signatures/upload (key-signatures.ts). */
  uploadSignatures(userId: string, body: Record<string, unknown>): Promise<JsonObject> {
    return uploadSignatures({ store: this.store, deviceLists: this.deps.deviceLists, isLocal: (u) => this.isLocal(u) }, userId, body);
  }
}

/** `failures` naming each user's server, when there is no way to reach it. */
function unreachable(userIds: readonly string[]): Record<string, JsonObject> {
  return Object.fromEntries(userIds.map((u) => [parseUserId(u)?.serverName ?? u, { errcode: 'M_UNRECOGNIZED', error: 'Federation is off on this server' }]));
}

function keysOf(keys: Record<string, unknown>, field: string): StoredKey[] {
  if (!isObject(keys)) throw new MatrixError('M_BAD_JSON', `${field} must be an object`);
  return Object.entries(keys).map(([id, value]) => {
    if (typeof value !== 'string' && !isObject(value)) throw new MatrixError('M_BAD_JSON', `${field}.${id}: a key is a string or a signed object`);
    return { ...splitKeyId(id, field), keyJson: canonicalOrRefuse(value, `${field}.${id}`) };
  });
}

/** `one_time_key_counts`, with `signed_curve25519` always present as clients expect (as Synapse does). */
export function countsJson(counts: KeyCounts): Record<string, number> {
  return { signed_curve25519: 0, ...counts.oneTimeKeys };
}
