import type { FederationClient } from '../federation/federation-client.ts';
import type { Logger } from '../logger.ts';
import { parseUserId } from '../shared/user-id.ts';
import type { Db } from '../storage/drivers/database.ts';
import { RemoteDeviceListsStore, type CachedRemoteUser, type RemoteUserKeys } from '../storage/remote-device-lists-store.ts';
import type { DeviceLists } from './device-lists.ts';
import { checkCrossSigningKey, checkDeviceKeys, hasValidSignature, isObject, type JsonObject } from './key-checks.ts';
import { NO_CLAIM_PARAMS, type ClaimParams } from './key-algorithms.ts';
import type { RemoteKeysSource, RemoteQueryResult } from './keys.ts';

/** However long a client asks to wait, other servers get at most this long. */
const MAX_TIMEOUT_MS = 60_000;
/** Devices of one remote user kept; a server claiming more is cut off here (logged). */
const MAX_REMOTE_DEVICES = 1_000;

export interface FederatedKeysDeps {
  db: Db;
  client: FederationClient;
  deviceLists: DeviceLists;
  log: Logger;
}

type OneTimeKeys = Record<string, Record<string, Record<string, unknown>>>;

/**
 * Keys of users on other servers, for our clients: queried and claimed over federation (one
 * request per server, all at once, bounded by the client's timeout: an unreachable or slow server
 * is a `failures` entry and never holds up the others), checked (device keys self-signed,
 * self-signing keys signed by the master key) before anything is served or cached.
 *
 * The cache (`remote_device_lists`) answers a query only for users whose server keeps us told,
 * i.e. has sent us a device-list EDU for them (our own servers do, once one of our users queried
 * theirs); every other user's keys are asked for again on each query. A stock Synapse sends such
 * EDUs only to servers sharing a room with the user, so its users are always asked for live, and
 * `pollUnsubscribed` re-asks for those some local user tracks, so that a change still reaches
 * their `device_lists.changed`.
 */
export class FederatedKeys implements RemoteKeysSource {
  private readonly store: RemoteDeviceListsStore;
  private readonly resyncing = new Map<string, Promise<void>>();

  constructor(private readonly deps: FederatedKeysDeps) {
    this.store = new RemoteDeviceListsStore(deps.db);
  }

  async query(deviceKeys: Record<string, readonly string[]>, timeoutMs: number): Promise<RemoteQueryResult> {
    const result: RemoteQueryResult = { deviceKeys: {}, masterKeys: {}, selfSigningKeys: {}, failures: {} };
    const cached = await this.store.get(Object.keys(deviceKeys));
    const deadline = Math.min(timeoutMs, MAX_TIMEOUT_MS);
    await Promise.all(
      [...byServer(Object.keys(deviceKeys))].map(async ([server, users]) => {
        const toFetch = users.filter((u) => !isFresh(cached.get(u)));
        let fetched = new Map<string, RemoteUserKeys>();
        if (toFetch.length > 0) {
          try {
            fetched = await withDeadline(this.fetchAndCache(server, toFetch), deadline, server);
          } catch (e) {
            result.failures[server] = { status: 503, message: e instanceof Error ? e.message : String(e) };
          }
        }
        for (const userId of users) {
          const keys = fetched.get(userId) ?? cached.get(userId)?.keys;
          if (keys === undefined) continue;
          const wanted = deviceKeys[userId] ?? [];
          result.deviceKeys[userId] = Object.fromEntries(Object.entries(keys.devices).filter(([id]) => wanted.length === 0 || wanted.includes(id))) as Record<string, JsonObject>;
          if (keys.master_key !== undefined) result.masterKeys[userId] = keys.master_key;
          if (keys.self_signing_key !== undefined) result.selfSigningKeys[userId] = keys.self_signing_key;
        }
      }),
    );
    return result;
  }

  /**
   * Claims over federation, one request per server at once. `params.raw` (MSC4244's `mls` object)
   * goes beside `one_time_keys` as the client sent it; a server that ignores it (a stock Synapse)
   * hands out any key of the algorithm, which is passed on unchecked like every remote key.
   */
  async claim(oneTimeKeys: Record<string, Record<string, string>>, timeoutMs: number, params: ClaimParams = NO_CLAIM_PARAMS): Promise<{ oneTimeKeys: OneTimeKeys; failures: Record<string, JsonObject> }> {
    const out: OneTimeKeys = {};
    const failures: Record<string, JsonObject> = {};
    const deadline = Math.min(timeoutMs, MAX_TIMEOUT_MS);
    await Promise.all(
      [...byServer(Object.keys(oneTimeKeys))].map(async ([server, users]) => {
        const asked = Object.fromEntries(users.map((u) => [u, oneTimeKeys[u] ?? {}]));
        try {
          const res = await withDeadline(this.deps.client.request(server, 'POST', '/_matrix/federation/v1/user/keys/claim', { ...params.raw, one_time_keys: asked }), deadline, server);
          if (res.status !== 200 || !isObject(res.json) || !isObject(res.json.one_time_keys)) throw new Error(`${server} answered ${res.status}`);
          for (const [userId, devices] of Object.entries(res.json.one_time_keys)) {
            const wanted = asked[userId];
            if (wanted === undefined || !isObject(devices)) continue;
            for (const [deviceId, keys] of Object.entries(devices)) {
              const algorithm = wanted[deviceId];
              if (algorithm === undefined || !isObject(keys)) continue;
              // One key, of the algorithm asked for, a string or an object: anything else is dropped.
              const entries = Object.entries(keys).filter(([id, k]) => id.startsWith(`${algorithm}:`) && (typeof k === 'string' || isObject(k)));
              const first = entries[0];
              if (first !== undefined) ((out[userId] ??= {})[deviceId] = { [first[0]]: first[1] });
            }
          }
        } catch (e) {
          failures[server] = { status: 503, message: e instanceof Error ? e.message : String(e) };
        }
      }),
    );
    return { oneTimeKeys: out, failures };
  }

  /** `m.device_list_update` from `origin` (checked: the user is on `origin`). */
  async applyDeviceListUpdate(content: { user_id: string; device_id: string; stream_id: number; prev_id: number[]; deleted: boolean; keys?: JsonObject; device_display_name?: string }): Promise<void> {
    const userId = content.user_id;
    const cached = (await this.store.get([userId])).get(userId);
    const known = cached?.streamId ?? null;
    // Applied in place only when nothing is missing: every update it follows is the one we hold
    // (or it follows none and we hold a list), else the list is resynced from the server.
    const follows = content.prev_id.every((p) => p === known) && cached !== undefined && !cached.stale;
    if (!follows) {
      await this.deps.deviceLists.changed(await this.store.markStale(userId), [userId]);
      this.resyncSoon(userId);
      return;
    }
    const devices = { ...cached.keys.devices };
    if (content.deleted) delete devices[content.device_id];
    else {
      const keys = verifiedDevice(userId, content.device_id, content.keys);
      if (keys === null) {
        this.deps.log.warn('refused m.device_list_update: device keys not validly self-signed', { userId, deviceId: content.device_id });
        return;
      }
      devices[content.device_id] = withDisplayName(keys, content.device_display_name);
    }
    const position = await this.store.put(userId, { ...cached.keys, devices }, { streamId: content.stream_id, subscribed: true });
    await this.deps.deviceLists.changed(position, [userId]);
  }

  /** `m.signing_key_update` from `origin`: the user's master and self-signing keys. */
  async applySigningKeyUpdate(content: { user_id: string; master_key?: unknown; self_signing_key?: unknown }): Promise<void> {
    const userId = content.user_id;
    const cached = (await this.store.get([userId])).get(userId);
    const keys = verifiedCrossSigning(userId, { master_key: content.master_key ?? cached?.keys.master_key, self_signing_key: content.self_signing_key ?? cached?.keys.self_signing_key });
    if (cached === undefined || cached.stale) {
      await this.deps.deviceLists.changed(await this.store.markStale(userId), [userId]);
      this.resyncSoon(userId);
      return;
    }
    const position = await this.store.put(userId, { devices: cached.keys.devices, ...keys }, { subscribed: true });
    await this.deps.deviceLists.changed(position, [userId]);
  }

  /** Re-asks the servers of tracked users that do not keep us told (Synapse's without a shared room). */
  async pollUnsubscribed(olderThanMs: number, limit: number): Promise<number> {
    const users = await this.store.unsubscribedTracked(limit, Date.now() - olderThanMs);
    await Promise.all([...byServer(users)].map(([server, list]) => this.fetchAndCache(server, list).catch(() => new Map())));
    return users.length;
  }

  /** One resync at a time per user, in the background: the EDU's transaction does not wait for it. */
  private resyncSoon(userId: string): void {
    if (this.resyncing.has(userId)) return;
    const run = this.resync(userId)
      .catch((e: unknown) => this.deps.log.warn('device list resync failed; the next query asks again', { userId, err: String(e) }))
      .finally(() => this.resyncing.delete(userId));
    this.resyncing.set(userId, run);
  }

  /** `GET /user/devices/{userId}`: the whole list and the stream position it is at. */
  async resync(userId: string): Promise<void> {
    const server = parseUserId(userId)?.serverName;
    if (server === undefined) return;
    const res = await this.deps.client.request(server, 'GET', `/_matrix/federation/v1/user/devices/${encodeURIComponent(userId)}`);
    if (res.status !== 200 || !isObject(res.json) || res.json.user_id !== userId || !Array.isArray(res.json.devices)) throw new Error(`${server} answered ${res.status}`);
    const devices: Record<string, Record<string, unknown>> = {};
    for (const d of res.json.devices.slice(0, MAX_REMOTE_DEVICES)) {
      if (!isObject(d) || typeof d.device_id !== 'string') continue;
      const keys = verifiedDevice(userId, d.device_id, d.keys);
      if (keys !== null) devices[d.device_id] = withDisplayName(keys, typeof d.device_display_name === 'string' ? d.device_display_name : undefined);
    }
    const streamId = typeof res.json.stream_id === 'number' && Number.isSafeInteger(res.json.stream_id) ? res.json.stream_id : null;
    const keys = { devices, ...verifiedCrossSigning(userId, { master_key: res.json.master_key, self_signing_key: res.json.self_signing_key }) };
    await this.deps.deviceLists.changed(await this.store.put(userId, keys, { streamId, subscribed: true }), [userId]);
  }

  /** `POST /user/keys/query` to one server for some of its users; caches and returns what checked out. */
  private async fetchAndCache(server: string, users: readonly string[]): Promise<Map<string, RemoteUserKeys>> {
    const res = await this.deps.client.request(server, 'POST', '/_matrix/federation/v1/user/keys/query', { device_keys: Object.fromEntries(users.map((u) => [u, []])) });
    if (res.status !== 200 || !isObject(res.json)) throw new Error(`${server} answered ${res.status}`);
    const body = res.json;
    const section = (name: string): JsonObject => (isObject(body[name]) ? body[name] : {});
    const out = new Map<string, RemoteUserKeys>();
    const changed: string[] = [];
    let position = 0;
    for (const userId of users) {
      const theirs = section('device_keys')[userId];
      const devices: Record<string, Record<string, unknown>> = {};
      if (isObject(theirs)) {
        for (const [deviceId, raw] of Object.entries(theirs).slice(0, MAX_REMOTE_DEVICES)) {
          const keys = verifiedDevice(userId, deviceId, raw);
          if (keys !== null) devices[deviceId] = keys;
        }
      }
      const keys: RemoteUserKeys = { devices, ...verifiedCrossSigning(userId, { master_key: section('master_keys')[userId], self_signing_key: section('self_signing_keys')[userId] }) };
      out.set(userId, keys);
      const at = await this.store.put(userId, keys, {});
      if (at > 0) {
        changed.push(userId);
        position = Math.max(position, at);
      }
    }
    if (changed.length > 0) await this.deps.deviceLists.changed(position, changed);
    return out;
  }
}

function isFresh(cached: CachedRemoteUser | undefined): boolean {
  return cached !== undefined && cached.subscribed && !cached.stale;
}

/** Users grouped by their server (invalid user IDs dropped). */
function byServer(userIds: readonly string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const u of userIds) {
    const server = parseUserId(u)?.serverName;
    if (server === undefined) continue;
    let list = out.get(server);
    if (list === undefined) out.set(server, (list = []));
    list.push(u);
  }
  return out;
}

function withDeadline<T>(work: Promise<T>, ms: number, server: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${server} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}

/** The device keys if they name this user and device and carry the device's own valid signature. */
function verifiedDevice(userId: string, deviceId: string, keys: unknown): Record<string, unknown> | null {
  try {
    checkDeviceKeys(keys, userId, deviceId);
    return keys as Record<string, unknown>;
  } catch {
    return null;
  }
}

function withDisplayName(keys: Record<string, unknown>, name: string | undefined): Record<string, unknown> {
  if (name === undefined) return keys;
  return { ...keys, unsigned: { ...(isObject(keys.unsigned) ? keys.unsigned : {}), device_display_name: name } };
}

/** The master key if well formed, and the self-signing key only if the master key signed it. */
function verifiedCrossSigning(userId: string, keys: { master_key: unknown; self_signing_key: unknown }): Pick<RemoteUserKeys, 'master_key' | 'self_signing_key'> {
  if (keys.master_key === undefined || keys.master_key === null) return {};
  let master;
  try {
    master = checkCrossSigningKey(keys.master_key, userId, 'master');
  } catch {
    return {};
  }
  const out: Pick<RemoteUserKeys, 'master_key' | 'self_signing_key'> = { master_key: keys.master_key as Record<string, unknown> };
  try {
    const ssk = keys.self_signing_key;
    if (ssk !== undefined && ssk !== null) {
      checkCrossSigningKey(ssk, userId, 'self_signing');
      if (hasValidSignature(ssk as JsonObject, userId, master.keyId, master.publicKey)) out.self_signing_key = ssk as Record<string, unknown>;
    }
  } catch {
    // A malformed self-signing key is left out; the master key still stands.
  }
  return out;
}
