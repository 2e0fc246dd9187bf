/**
 * Real matrix-js-sdk clients with their Rust crypto (matrix-sdk-crypto-wasm), driven against any
 * homeserver base URL: this server in a test, or a stock Synapse to prove the harness itself.
 * Nothing here is mocked: every request goes over HTTP and every key is made by the Rust crypto.
 */
import { DehydratedDeviceKey, UserId, type OlmMachine } from '@matrix-org/matrix-sdk-crypto-wasm';
import { ClientEvent, createClient, type AuthDict, type MatrixClient, type SyncState } from 'matrix-js-sdk';
import { CryptoEvent, VerificationPhase, VerificationRequestEvent, VerifierEvent, type CryptoApi, type ShowSasCallbacks, type VerificationRequest, type Verifier } from 'matrix-js-sdk/lib/crypto-api/index.js';
import { expect } from 'vitest';
import { logger as globalLogger, type Logger } from 'matrix-js-sdk/lib/logger.js';
import type { ReceivedToDeviceMessage } from 'matrix-js-sdk/lib/sync-accumulator.js';

// matrix-js-sdk 43 calls Promise.withResolvers (Node 22+) in its crypto's outgoing-request loop and
// when it recovers from a failed /sync; on Node 20 that would throw inside the SDK and silently
// stop key uploads or the sync loop.
const withResolvers = <T>() => {
  let resolve!: (value: T | PromiseLike<T>) => void;
  let reject!: (reason?: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
};
(Promise as unknown as { withResolvers?: typeof withResolvers }).withResolvers ??= withResolvers;

// Some SDK modules log through the global logger rather than the client's; it is a loglevel
// instance at run time, though typed without setLevel.
(globalLogger as unknown as { setLevel(level: string): void }).setLevel(process.env.E2EE_TEST_LOG === '1' ? 'debug' : 'silent');

export const DEFAULT_TIMEOUT_MS = 20_000;

export interface Credentials {
  userId: string;
  deviceId: string;
  accessToken: string;
  password: string;
}

/**
 * A logger that keeps the SDK's warnings and errors instead of printing them: the crypto's
 * outgoing-request loop swallows failed requests (it only logs them), so a test that times out
 * reports what the client complained about.
 */
class RecordingLogger implements Logger {
  readonly problems: string[] = [];
  private readonly echo = process.env.E2EE_TEST_LOG === '1';
  constructor(private readonly prefix: string) {}
  private keep(level: string, args: unknown[]): void {
    // The SDK warns about every default push rule a server does not list; nothing here uses them.
    if (typeof args[0] === 'string' && args[0].includes('push rule')) return;
    const line = `${this.prefix} ${level}: ${args.map((a) => (a instanceof Error ? a.message : typeof a === 'string' ? a : safeJson(a))).join(' ')}`;
    if (this.problems.length >= 200) this.problems.shift();
    this.problems.push(line);
    if (this.echo) console.error(line);
  }
  trace = (...args: unknown[]): void => void (this.echo && console.error(this.prefix, ...args));
  debug = (...args: unknown[]): void => void (this.echo && console.error(this.prefix, ...args));
  info = (...args: unknown[]): void => void (this.echo && console.error(this.prefix, ...args));
  warn = (...args: unknown[]): void => this.keep('warn', args);
  error = (...args: unknown[]): void => this.keep('error', args);
  getChild = (namespace: string): Logger => {
    const child = new RecordingLogger(`${this.prefix}${namespace}`);
    // Children share the parent's record, so one list shows everything this client said.
    (child as { problems: string[] }).problems = this.problems;
    return child;
  };
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/** A raw Matrix client-server request (no SDK), for what a test checks on the wire. */
export async function matrixRequest<T = Record<string, unknown>>(
  baseUrl: string,
  method: string,
  path: string,
  token: string | null,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  const res = await fetch(`${baseUrl}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token === null ? {} : { authorization: `Bearer ${token}` }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text === '' ? {} : JSON.parse(text);
  } catch {
    parsed = { raw: text };
  }
  return { status: res.status, body: parsed as T };
}

async function expectOk<T>(what: string, p: Promise<{ status: number; body: T }>): Promise<T> {
  const r = await p;
  if (r.status !== 200) throw new Error(`${what}: HTTP ${r.status} ${safeJson(r.body)}`);
  return r.body;
}

/** Registers a user with `m.login.dummy` (a first stage without session, as this server and Synapse both accept). */
export async function registerUser(baseUrl: string, username: string, password = 'e2ee test password'): Promise<Credentials> {
  const body = await expectOk<{ user_id: string; device_id: string; access_token: string }>(
    `register ${username}`,
    matrixRequest(baseUrl, 'POST', '/_matrix/client/v3/register', null, { username, password, auth: { type: 'm.login.dummy' }, initial_device_display_name: `${username} (register)` }),
  );
  return { userId: body.user_id, deviceId: body.device_id, accessToken: body.access_token, password };
}

/** A new device of an existing user, by password login. */
export async function loginDevice(baseUrl: string, user: Pick<Credentials, 'userId' | 'password'>): Promise<Credentials> {
  const body = await expectOk<{ user_id: string; device_id: string; access_token: string }>(
    `login ${user.userId}`,
    matrixRequest(baseUrl, 'POST', '/_matrix/client/v3/login', null, {
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user: user.userId },
      password: user.password,
    }),
  );
  return { userId: body.user_id, deviceId: body.device_id, accessToken: body.access_token, password: user.password };
}

/**
 * Answers user-interactive auth with `m.login.password`: first the request without `auth` (which
 * a server may accept outright, as Synapse does for a user's first cross-signing keys), then, on
 * the 401 carrying a session, with the password.
 */
export function passwordAuth<T>(creds: Pick<Credentials, 'userId' | 'password'>): (makeRequest: (auth: AuthDict | null) => Promise<T>) => Promise<T> {
  return async (makeRequest) => {
    try {
      return await makeRequest(null);
    } catch (e) {
      const err = e as { httpStatus?: number; data?: { session?: string; flows?: unknown } };
      if (err.httpStatus !== 401 || err.data?.flows === undefined) throw e;
      return makeRequest({
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: creds.userId },
        password: creds.password,
        ...(err.data.session === undefined ? {} : { session: err.data.session }),
      });
    }
  };
}

/** DELETE /devices/{deviceId} through user-interactive auth with the account's password. */
export async function deleteDeviceWithPassword(baseUrl: string, creds: Credentials, deviceId: string): Promise<void> {
  const path = `/_matrix/client/v3/devices/${encodeURIComponent(deviceId)}`;
  const first = await matrixRequest<{ session?: string; flows?: { stages: string[] }[] }>(baseUrl, 'DELETE', path, creds.accessToken, {});
  if (first.status === 200) return;
  if (first.status !== 401 || !first.body.flows?.some((f) => f.stages.includes('m.login.password'))) {
    throw new Error(`DELETE ${path}: expected a 401 offering m.login.password, got ${first.status} ${safeJson(first.body)}`);
  }
  await expectOk(
    `DELETE ${path} with password`,
    matrixRequest(baseUrl, 'DELETE', path, creds.accessToken, {
      auth: {
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: creds.userId },
        password: creds.password,
        ...(first.body.session === undefined ? {} : { session: first.body.session }),
      },
    }),
  );
}

/**
 * Resolves with the first value `check` returns, re-checked whenever `subscribe`'s events wake it
 * (checks never overlap), or rejects after `timeoutMs` with `diagnostics` appended.
 */
export function waitFor<T>(
  describe: string,
  subscribe: (wake: () => void) => () => void,
  check: () => T | undefined | Promise<T | undefined>,
  timeoutMs = DEFAULT_TIMEOUT_MS,
  diagnostics: () => string = () => '',
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let done = false;
    let unsubscribe: () => void = () => {};
    const finish = (f: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      unsubscribe();
      f();
    };
    const timer = setTimeout(() => finish(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${describe}${diagnostics()}`))), timeoutMs);
    let running = false;
    let again = false;
    const wake = () => {
      if (done) return;
      if (running) {
        again = true;
        return;
      }
      running = true;
      void (async () => {
        try {
          do {
            again = false;
            const value = await check();
            if (value !== undefined) return finish(() => resolve(value));
          } while (again && !done);
        } catch (e) {
          finish(() => reject(e));
        } finally {
          running = false;
        }
      })();
    };
    unsubscribe = subscribe(wake);
    wake();
  });
}

/** Time of day with milliseconds (UTC), to line a client's wire log up with the other client's and the servers' logs. */
function clock(ms: number): string {
  return new Date(ms).toISOString().slice(11, 23);
}

/**
 * What one client put on the wire for to-device delivery: each PUT /sendToDevice (type, targets,
 * when it was answered and how) and each /sync (since, timeout, when it was answered and the
 * to-device types it carried). A stuck exchange then shows whether a message went out late,
 * never, or went out and came back late in the other side's /sync (a server's missed wake-up
 * shows as a long-poll answered after its full timeout with the message in it).
 */
class WireLog {
  private readonly lines: string[] = [];
  /** Requests sent and not answered yet (a parked long-poll), by a key of their own. */
  private readonly inFlight = new Map<number, string>();
  private nextKey = 0;

  /** Notes a request as in flight until the function returned is called (when it is answered). */
  begin(line: string): () => void {
    const key = this.nextKey++;
    this.inFlight.set(key, line);
    return () => this.inFlight.delete(key);
  }

  add(line: string): void {
    if (this.lines.length >= 300) this.lines.shift();
    this.lines.push(line);
  }

  /** The lines from `sinceMs` on (all of them by default). */
  text(sinceMs = 0): string {
    const from = clock(sinceMs);
    // Lines are added when answered; sorted, they read in the order the requests were sent.
    const shown = [...(sinceMs === 0 ? this.lines : this.lines.filter((l) => l.slice(0, 12) >= from)), ...[...this.inFlight.values()].map((l) => `${l}: not answered yet`)].sort();
    return shown.length === 0 ? '  (nothing)' : `  ${shown.join('\n  ')}`;
  }

  /**
   * Records a request sent at `startedAt` and its answer (`status`, or why it failed), if it is a
   * to-device send or a /sync; `body` is the answer's JSON when the caller read it.
   */
  record(method: string, url: URL, requestBody: unknown, startedAt: number, status: number | string, body: unknown): void {
    const took = `${Date.now() - startedAt} ms`;
    const send = /\/sendToDevice\/([^/]+)\/([^/]+)$/.exec(url.pathname);
    if (method === 'PUT' && send !== null) {
      const type = decodeURIComponent(send[1] ?? '');
      let targets = '?';
      try {
        const messages = (JSON.parse(String(requestBody)) as { messages?: Record<string, Record<string, { transaction_id?: unknown }>> }).messages ?? {};
        targets = Object.entries(messages)
          .flatMap(([u, ds]) => Object.entries(ds).map(([d, c]) => `${u}/${d}${typeof c.transaction_id === 'string' ? ` (flow ${c.transaction_id})` : ''}`))
          .join(', ');
      } catch {
        // An unreadable body is logged as '?'; the send itself is what matters.
      }
      this.add(`${clock(startedAt)} PUT ${type} -> ${targets}: ${status} after ${took}`);
    } else if (method === 'GET' && url.pathname.endsWith('/sync')) {
      const events = (body as SyncBody | undefined)?.to_device?.events ?? [];
      const types = events.map((e) => e.type).join(', ');
      const since = url.searchParams.get('since') ?? '-';
      this.add(`${clock(startedAt)} /sync since ${since} timeout ${url.searchParams.get('timeout') ?? '-'}: ${status} after ${took} with [${types}]`);
    }
  }
}

/** One signed-in device running matrix-js-sdk with the Rust crypto and an in-memory crypto store. */
export class CryptoClient {
  /** Every to-device message the client has handed to the application, decrypted where it was encrypted. */
  readonly received: ReceivedToDeviceMessage[] = [];
  /** The secret-storage key this device knows (as a user would type in a recovery key), if any. */
  secretStorageKey: { keyId: string | null; privateKey: Uint8Array<ArrayBuffer> } | null = null;
  /**
   * How long to hold back each request before it is sent (0: not at all), e.g. to make one
   * to-device PUT slow and see that nothing depends on it being fast.
   */
  holdBack: (method: string, url: URL) => number = () => 0;
  private stopped = false;

  private constructor(
    readonly baseUrl: string,
    readonly creds: Credentials,
    readonly client: MatrixClient,
    private readonly log: RecordingLogger,
    /** Every /sync response body as the server sent it, before the client processed it. */
    readonly syncResponses: SyncBody[],
    /** The client's to-device sends and /sync requests, timed (see WireLog). */
    readonly wire: WireLog,
  ) {
    client.on(ClientEvent.ReceivedToDeviceMessage, (m) => this.received.push(m));
  }

  get userId(): string {
    return this.creds.userId;
  }
  get deviceId(): string {
    return this.creds.deviceId;
  }

  get crypto(): CryptoApi {
    const crypto = this.client.getCrypto();
    if (crypto === undefined) throw new Error('crypto not initialised');
    return crypto;
  }

  /** The RustCrypto's internals a test needs and the CryptoApi does not expose. */
  private get internals(): {
    olmMachine: OlmMachine;
    outgoingRequestsManager: { doProcessOutgoingRequests(): Promise<void> };
    outgoingRequestProcessor: { makeOutgoingRequest(request: unknown): Promise<void> };
    dehydratedDeviceManager: { createAndUploadDehydratedDevice(): Promise<void>; rehydrateDeviceIfAvailable(): Promise<boolean> };
  } {
    return this.crypto as unknown as CryptoClient['internals'];
  }

  get olmMachine(): OlmMachine {
    return this.internals.olmMachine;
  }

  /** The SDK's recorded warnings and errors, for a failure message. */
  diagnostics = (): string => (this.log.problems.length === 0 ? '' : `\n${this.creds.userId}/${this.creds.deviceId} logged:\n  ${this.log.problems.slice(-30).join('\n  ')}`);

  /**
   * Starts a client for `creds`: Rust crypto with an in-memory store (no IndexedDB is touched, so
   * fake-indexeddb is not needed), the sync loop, and waits until the first sync is processed and
   * this device's keys are on the server.
   */
  static async start(baseUrl: string, creds: Credentials, opts: { secretStorageKey?: Uint8Array } = {}): Promise<CryptoClient> {
    const log = new RecordingLogger(`[${creds.userId}/${creds.deviceId}]`);
    const syncResponses: SyncBody[] = [];
    // The SDK's own fetch, teed: a test can check the /sync fields the client was given
    // (device_lists, one-time key counts) without a second reader acknowledging its to-device queue.
    const wire = new WireLog();
    const recordingFetch: typeof fetch = async (input, init) => {
      const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
      const method = init?.method ?? 'GET';
      const hold = self?.holdBack(method, url) ?? 0;
      if (hold > 0) await new Promise((resolve) => setTimeout(resolve, hold));
      const startedAt = Date.now();
      const answered = wire.begin(`${clock(startedAt)} ${method} ${url.pathname}${url.pathname.endsWith('/sync') ? ` since ${url.searchParams.get('since') ?? '-'}` : ''}`);
      let res: Response;
      try {
        res = await fetch(input, init);
      } catch (e) {
        answered();
        wire.record(method, url, init?.body, startedAt, `failed (${e instanceof Error ? e.message : String(e)})`, undefined);
        throw e;
      }
      answered();
      let body: unknown;
      if (res.ok && url.pathname.endsWith('/sync')) {
        try {
          body = await res.clone().json();
          syncResponses.push(body as SyncBody);
        } catch {
          // An aborted long-poll (at stop) has no body to record.
        }
      }
      wire.record(method, url, init?.body, startedAt, res.status, body);
      return res;
    };
    let self: CryptoClient | null = null;
    const client = createClient({
      baseUrl,
      userId: creds.userId,
      deviceId: creds.deviceId,
      accessToken: creds.accessToken,
      logger: log,
      fetchFn: recordingFetch,
      cryptoCallbacks: {
        // Secret storage asks for its key whenever it reads or writes a secret; a real client
        // would prompt for the recovery key here.
        getSecretStorageKey: async ({ keys }) => {
          const key = self?.secretStorageKey;
          if (key == null) return null;
          const keyId = key.keyId ?? Object.keys(keys)[0];
          return keyId === undefined ? null : [keyId, key.privateKey];
        },
      },
    });
    await client.initRustCrypto({ useIndexedDB: false });
    const c = new CryptoClient(baseUrl, creds, client, log, syncResponses, wire);
    self = c;
    if (opts.secretStorageKey !== undefined) c.secretStorageKey = { keyId: null, privateKey: new Uint8Array(opts.secretStorageKey) };
    const prepared = waitFor(
      `${creds.userId}/${creds.deviceId}: first sync`,
      (wake) => {
        client.on(ClientEvent.Sync, wake);
        return () => client.off(ClientEvent.Sync, wake);
      },
      () => {
        const state: SyncState | null = client.getSyncState();
        return state === 'PREPARED' || state === 'SYNCING' ? true : state === 'ERROR' ? Promise.reject(new Error(`sync failed${c.diagnostics()}`)) : undefined;
      },
      DEFAULT_TIMEOUT_MS,
      c.diagnostics,
    );
    await client.startClient({ initialSyncLimit: 1 });
    await prepared;
    await c.waitForOwnKeysUploaded();
    return c;
  }

  /** Runs the crypto's queued requests now (key uploads, queries, claims, to-device) instead of after the next sync. */
  async processOutgoingRequests(): Promise<void> {
    await this.internals.outgoingRequestsManager.doProcessOutgoingRequests();
  }

  /** Sends one request the crypto produced outside its own queue (e.g. a room key share). */
  async makeOutgoingRequest(request: unknown): Promise<void> {
    await this.internals.outgoingRequestProcessor.makeOutgoingRequest(request);
  }

  /** This device's keys as the server's /keys/query returns them, or undefined. */
  async queryDevice(userId: string, deviceId: string): Promise<Record<string, unknown> | undefined> {
    const r = await expectOk<{ device_keys?: Record<string, Record<string, Record<string, unknown>>> }>(
      'keys/query',
      matrixRequest(this.baseUrl, 'POST', '/_matrix/client/v3/keys/query', this.creds.accessToken, { device_keys: { [userId]: [deviceId] } }),
    );
    return r.device_keys?.[userId]?.[deviceId];
  }

  /** Waits until the server's /keys/query returns this device's identity keys as the Rust crypto made them. */
  async waitForOwnKeysUploaded(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    const own = await this.crypto.getOwnDeviceKeys();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await this.processOutgoingRequests();
      const keys = (await this.queryDevice(this.userId, this.deviceId))?.keys as Record<string, string> | undefined;
      if (keys?.[`ed25519:${this.deviceId}`] === own.ed25519 && keys[`curve25519:${this.deviceId}`] === own.curve25519) return;
      if (Date.now() > deadline) throw new Error(`${this.userId}/${this.deviceId}: keys not on the server after ${timeoutMs} ms (keys/query gave ${safeJson(keys)})${this.diagnostics()}`);
      // The upload is driven by the sync loop; wait for the next sync rather than a fixed delay.
      await this.nextSync(Math.max(1, deadline - Date.now()));
    }
  }

  /** Resolves at the client's next processed sync response. */
  nextSync(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    let seen = false;
    return waitFor(
      'the next sync',
      (wake) => {
        const on = () => {
          seen = true;
          wake();
        };
        this.client.on(ClientEvent.Sync, on);
        return () => this.client.off(ClientEvent.Sync, on);
      },
      () => (seen ? true : undefined),
      timeoutMs,
      this.diagnostics,
    ).then(() => undefined);
  }

  /**
   * Makes the crypto track `userIds` and downloads their device keys. Without a shared room the
   * Rust crypto tracks only its own user (room membership is what adds users), so this tells the
   * OlmMachine directly, then runs the /keys/query it queues.
   */
  async trackUsers(userIds: string[], expectDevices: Record<string, string[]> = {}): Promise<void> {
    await this.olmMachine.updateTrackedUsers(userIds.map((u) => new UserId(u)));
    await this.waitForDevices(expectDevices);
  }

  /** Waits until the crypto knows every listed device (running its queued key queries). */
  async waitForDevices(expectDevices: Record<string, string[]>, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    await this.waitUntil(
      `to know ${safeJson(expectDevices)}`,
      async () => {
        const map = await this.crypto.getUserDeviceInfo(Object.keys(expectDevices));
        return Object.entries(expectDevices).every(([u, ds]) => ds.every((d) => map.get(u)?.has(d)));
      },
      timeoutMs,
    );
  }

  /**
   * Waits until `check` holds of the crypto's state, re-checked whenever the crypto's view of
   * devices or trust may have moved: after each sync (whose device_lists start key queries),
   * device and trust updates; the crypto's queued requests run before each check.
   */
  async waitUntil(describe: string, check: () => boolean | Promise<boolean>, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    const events = [CryptoEvent.DevicesUpdated, CryptoEvent.UserTrustStatusChanged, CryptoEvent.KeysChanged, ClientEvent.Sync] as const;
    await waitFor(
      `${this.userId}/${this.deviceId} ${describe}`,
      (wake) => {
        for (const e of events) this.client.on(e, wake);
        return () => {
          for (const e of events) this.client.off(e, wake);
        };
      },
      async () => {
        await this.processOutgoingRequests();
        return (await check()) ? true : undefined;
      },
      timeoutMs,
      this.diagnostics,
    );
  }

  /** Olm-encrypts `content` for each device (claiming one-time keys as needed) and sends it with /sendToDevice. */
  async sendEncrypted(type: string, devices: { userId: string; deviceId: string }[], content: Record<string, unknown>): Promise<void> {
    const batch = await this.crypto.encryptToDeviceMessages(type, devices, content);
    // The crypto silently leaves out devices it does not know or cannot get a session with.
    if (batch.batch.length !== devices.length) {
      throw new Error(`encryptToDeviceMessages produced ${batch.batch.length} messages for ${devices.length} devices${this.diagnostics()}`);
    }
    const byUser = new Map<string, Map<string, Record<string, unknown>>>();
    for (const m of batch.batch) {
      const forUser = byUser.get(m.userId) ?? new Map<string, Record<string, unknown>>();
      forUser.set(m.deviceId, m.payload);
      byUser.set(m.userId, forUser);
    }
    await this.client.sendToDevice(batch.eventType, byUser);
  }

  /** Waits for a received to-device message matching `match` (including ones that arrived before the call). */
  waitForToDevice(match: (m: ReceivedToDeviceMessage) => boolean, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<ReceivedToDeviceMessage> {
    return waitFor(
      `${this.userId}/${this.deviceId}: a matching to-device message (received so far: ${this.received.length})`,
      (wake) => {
        this.client.on(ClientEvent.ReceivedToDeviceMessage, wake);
        return () => this.client.off(ClientEvent.ReceivedToDeviceMessage, wake);
      },
      () => this.received.find(match),
      timeoutMs,
      () => `; received types ${safeJson(this.received.map((m) => m.message.type))}${this.diagnostics()}`,
    );
  }

  /** The next verification request another device sends us (or one already in progress from `fromUserId`). */
  waitForVerificationRequest(fromUserId: string, timeoutMs = DEFAULT_TIMEOUT_MS, diagnostics: () => string = this.diagnostics): Promise<VerificationRequest> {
    let got: VerificationRequest | undefined;
    return waitFor(
      `${this.userId}/${this.deviceId}: a verification request from ${fromUserId}`,
      (wake) => {
        const on = (r: VerificationRequest) => {
          if (r.otherUserId === fromUserId) got = r;
          wake();
        };
        this.client.on(CryptoEvent.VerificationRequestReceived, on);
        return () => this.client.off(CryptoEvent.VerificationRequestReceived, on);
      },
      () => got ?? this.crypto.getVerificationRequestsToDeviceInProgress(fromUserId).find((r) => !r.initiatedByMe),
      timeoutMs,
      diagnostics,
    );
  }

  /**
   * Cross-signing keys made by the Rust crypto and uploaded with /keys/device_signing/upload,
   * answering user-interactive auth with the account's password.
   */
  async bootstrapCrossSigning(): Promise<void> {
    await this.crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordAuth<void>(this.creds) });
    await this.processOutgoingRequests();
  }

  /**
   * Secret storage (SSSS) with a new random key, holding the cross-signing private keys: what
   * `startDehydration` requires besides cross-signing. It lives in account data
   * (m.secret_storage.default_key, m.secret_storage.key.<id>, m.cross_signing.*), written with
   * PUT /user/{userId}/account_data/{type} and, with the client running, awaited until each write
   * comes back in /sync's account_data. Returns the private key, as a user would note the recovery key.
   */
  async setUpSecretStorage(): Promise<Uint8Array> {
    const generated = await this.crypto.createRecoveryKeyFromPassphrase();
    this.secretStorageKey = { keyId: null, privateKey: new Uint8Array(generated.privateKey) };
    await this.crypto.bootstrapSecretStorage({ createSecretStorageKey: async () => generated, setupNewSecretStorage: true });
    return generated.privateKey;
  }

  /**
   * A dehydrated device (MSC3814) made and uploaded by the crypto's own DehydratedDeviceManager
   * with a new key saved in this device's crypto store, where the manager looks before secret
   * storage: startDehydration without the secret storage (account data) it insists on. Returns the
   * key, base64, for the device that will rehydrate.
   */
  async dehydrateWithNewKey(): Promise<string> {
    const key = DehydratedDeviceKey.createRandomKey();
    const base64 = key.toBase64();
    await this.olmMachine.dehydratedDevices().saveDehydratedDeviceKey(key);
    await this.internals.dehydratedDeviceManager.createAndUploadDehydratedDevice();
    return base64;
  }

  /** Rehydrates the user's dehydrated device with a key given as base64, through the crypto's manager. */
  async rehydrateWithKey(base64: string): Promise<boolean> {
    const key = DehydratedDeviceKey.createKeyFromArray(new Uint8Array(Buffer.from(base64, 'base64')));
    await this.olmMachine.dehydratedDevices().saveDehydratedDeviceKey(key);
    return this.internals.dehydratedDeviceManager.rehydrateDeviceIfAvailable();
  }

  /** The device's (last) recorded /sync next_batch. */
  lastSyncToken(): string {
    const last = this.syncResponses.at(-1);
    if (last === undefined) throw new Error('no /sync response recorded yet');
    return last.next_batch;
  }

  /** Waits for a recorded /sync response, from index `from` on, that satisfies `match`. */
  waitForSyncResponse(describe: string, match: (body: SyncBody) => boolean, from = 0, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<SyncBody> {
    return waitFor(
      `${this.userId}/${this.deviceId}: a /sync response with ${describe}`,
      (wake) => {
        this.client.on(ClientEvent.Sync, wake);
        return () => this.client.off(ClientEvent.Sync, wake);
      },
      () => this.syncResponses.slice(from).find(match),
      timeoutMs,
      this.diagnostics,
    );
  }

  /** Stops the sync loop and frees the OlmMachine; the device stays registered on the server. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.client.stopClient();
  }
}

/** The parts of a /sync response body the E2EE tests read. */
export interface SyncBody {
  next_batch: string;
  to_device?: { events?: { type: string; sender: string; content: Record<string, unknown> }[] };
  device_lists?: { changed?: string[]; left?: string[] };
  device_one_time_keys_count?: Record<string, number>;
  device_unused_fallback_key_types?: string[];
  account_data?: { events?: { type: string }[] };
}

/** A step of SAS verification on one side, with what that side displayed. */
export interface SasSide {
  request: VerificationRequest;
  verifier: Verifier;
  sas: ShowSasCallbacks;
}

function waitForPhase(side: CryptoClient, request: VerificationRequest, phases: VerificationPhase[], timeoutMs: number, diagnostics: () => string = side.diagnostics): Promise<VerificationPhase> {
  return waitFor(
    `${side.userId}/${side.deviceId}: verification phase ${phases.map((p) => VerificationPhase[p]).join('|')} (now ${VerificationPhase[request.phase]})`,
    (wake) => {
      request.on(VerificationRequestEvent.Change, wake);
      return () => request.off(VerificationRequestEvent.Change, wake);
    },
    () => {
      if (request.phase === VerificationPhase.Cancelled && !phases.includes(VerificationPhase.Cancelled)) {
        const seen = side.syncResponses.flatMap((r) => (r.to_device?.events ?? []).map((e) => (e.type === 'm.room.encrypted' ? e.type : `${e.type} ${JSON.stringify(e.content)}`)));
        return Promise.reject(new Error(`verification cancelled (${request.cancellationCode ?? '?'}) by ${request.cancellingUserId ?? '?'}${side.diagnostics()}\nto-device received: ${seen.join('\n  ')}`));
      }
      return phases.includes(request.phase) ? request.phase : undefined;
    },
    timeoutMs,
    diagnostics,
  );
}

function waitForShowSas(side: CryptoClient, verifier: Verifier, timeoutMs: number, diagnostics: () => string = side.diagnostics): Promise<ShowSasCallbacks> {
  return waitFor(
    `${side.userId}/${side.deviceId}: the SAS to show`,
    (wake) => {
      verifier.on(VerifierEvent.ShowSas, wake);
      verifier.on(VerifierEvent.Cancel, wake);
      return () => {
        verifier.off(VerifierEvent.ShowSas, wake);
        verifier.off(VerifierEvent.Cancel, wake);
      };
    },
    () => (verifier.hasBeenCancelled ? Promise.reject(new Error(`SAS cancelled${side.diagnostics()}`)) : (verifier.getShowSasCallbacks() ?? undefined)),
    timeoutMs,
    diagnostics,
  );
}

/** `work`, or a rejection naming `describe` and `diagnostics()` if it has not settled within `timeoutMs`. */
function bounded<T>(describe: string, work: Promise<T>, timeoutMs: number, diagnostics: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${describe}${diagnostics()}`)), timeoutMs);
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}

/**
 * One side of a SAS exchange as a failure message shows it: the request's phase, the verification
 * events it received (from whom, for which flow) and what it put on the wire since `sinceMs`.
 */
function sasSideReport(side: CryptoClient, request: VerificationRequest | undefined, sinceMs: number): string {
  const phase = request === undefined ? 'no request yet' : `phase ${VerificationPhase[request.phase]}${request.verifier === undefined ? '' : ', verifier made'}`;
  const received = side.received
    .filter((m) => m.message.type.startsWith('m.key.verification.'))
    .map((m) => `${m.message.type} from ${m.message.sender}${typeof m.message.content.transaction_id === 'string' ? ` (flow ${m.message.content.transaction_id})` : ''}`);
  // The Rust SAS drops a done that comes before the MAC it follows (see verifyWithSas), so say so.
  const types = side.received.filter((m) => m.message.type.startsWith('m.key.verification.')).map((m) => m.message.type);
  const doneAt = types.indexOf('m.key.verification.done');
  const macAt = types.indexOf('m.key.verification.mac');
  const doneFirst = doneAt >= 0 && (macAt < 0 || doneAt < macAt);
  return (
    `\n${side.userId}/${side.deviceId}: ${phase}` +
    (doneFirst ? '\n received the other side\'s done BEFORE its MAC: the SAS ignored that done and waits for another' : '') +
    `\n received verification events: ${received.length === 0 ? '(none)' : received.join('; ')}` +
    `\n received to-device types: ${safeJson(side.received.map((m) => m.message.type))}` +
    `\n wire since the SAS began:\n${side.wire.text(sinceMs)}` +
    side.diagnostics()
  );
}

/**
 * Interactive SAS verification of `responder`'s device by `initiator`, both sides confirming, as two
 * users would after comparing emoji: request → accept → start m.sas.v1 → both confirm → done.
 * Returns what each side showed, so a test can check they showed the same.
 *
 * Every await is bounded by `timeoutMs` (a caller's own deadline, if longer, then never fires
 * first) and a stuck one names its phase and both sides' received events and wire logs: whether a
 * verification event was never sent, sent and not delivered, or delivered late.
 */
export async function verifyWithSas(initiator: CryptoClient, responder: CryptoClient, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<{ initiator: SasSide; responder: SasSide }> {
  const began = Date.now();
  // Filled in as the requests appear, for the report of a phase that gets stuck.
  const seen: { request?: VerificationRequest; theirs?: VerificationRequest } = {};
  const report = () => `\nSAS began at ${clock(began)}, now ${clock(Date.now())}${sasSideReport(initiator, seen.request, began)}${sasSideReport(responder, seen.theirs, began)}`;
  const phase = <T>(describe: string, work: Promise<T>) => bounded(`SAS phase "${describe}"`, work, timeoutMs, report);

  const incoming = responder.waitForVerificationRequest(initiator.userId, timeoutMs, report);
  const request = (seen.request = await phase('initiator sends the request', initiator.crypto.requestDeviceVerification(responder.userId, responder.deviceId)));
  const theirs = (seen.theirs = await incoming);
  if (theirs.phase === VerificationPhase.Cancelled) throw new Error(`request arrived cancelled (${theirs.cancellationCode ?? '?'}) by ${theirs.cancellingUserId ?? '?'}${responder.diagnostics()}`);
  await phase('responder accepts (sends ready)', theirs.accept());
  await waitForPhase(initiator, request, [VerificationPhase.Ready], timeoutMs, report);
  const verifier = await phase('initiator starts m.sas.v1 (sends start)', request.startVerification('m.sas.v1'));
  await waitForPhase(responder, theirs, [VerificationPhase.Started], timeoutMs, report);
  const theirVerifier = theirs.verifier;
  if (theirVerifier === undefined) throw new Error('responder has no verifier after the start');

  // verify() resolves only once the whole exchange (MACs and done) completes, so both run at once.
  const verified = Promise.all([verifier.verify(), theirVerifier.verify()]);
  verified.catch(() => {}); // surfaced below; this only keeps an early rejection from going unhandled
  const [sas, theirSas] = await Promise.all([waitForShowSas(initiator, verifier, timeoutMs, report), waitForShowSas(responder, theirVerifier, timeoutMs, report)]);

  // One side confirms at a time, the second only once the first one's MAC has reached it. Both at
  // once race inside the client: confirm() sends the MAC with a PUT of its own, while the done the
  // Rust crypto owes once the other side's MAC arrives goes out with the next sync's queued
  // requests, on another connection. If that done reaches the server before the MAC still in
  // flight, the other side receives done before MAC; the Rust SAS ignores a done before the MAC
  // (only WaitingForDone accepts one), so that side's verify() never resolves, though both
  // requests reach phase Done. Seen in CI as a SAS step stuck for its whole 60 s; made to happen
  // at will by holding one side's MAC PUT back for a second. In this order each done follows its
  // MAC on the wire (the first side's MAC is answered before the second confirms; the second,
  // having the first's MAC, sends its MAC and done one after the other), so a done that still
  // arrives first is the servers' doing, which this test is here to catch.
  await phase('initiator confirms the SAS (sends its MAC)', sas.confirm());
  const flow = request.transactionId;
  await phase(
    "the initiator's MAC reaches the responder",
    responder.waitForToDevice((m) => m.message.type === 'm.key.verification.mac' && m.message.sender === initiator.userId && m.message.content.transaction_id === flow, timeoutMs),
  );
  await phase('responder confirms the SAS (sends its MAC and done)', theirSas.confirm());
  await phase('both verify() calls (the MAC and done from the other side)', verified);
  await Promise.all([waitForPhase(initiator, request, [VerificationPhase.Done], timeoutMs, report), waitForPhase(responder, theirs, [VerificationPhase.Done], timeoutMs, report)]);
  return { initiator: { request, verifier, sas }, responder: { request: theirs, verifier: theirVerifier, sas: theirSas } };
}

const target = (c: CryptoClient) => ({ userId: c.userId, deviceId: c.deviceId });

/** Sends an Olm-encrypted message and checks it arrived decrypted, from the right device, and was ciphertext on the wire. */
export async function sendAndReceiveEncrypted(from: CryptoClient, to: CryptoClient, text: string): Promise<void> {
  const type = 'org.example.e2ee_test';
  await from.sendEncrypted(type, [target(to)], { text });
  const got = await to.waitForToDevice((m) => m.message.type === type && m.message.content.text === text);
  expect(got.message.sender).toBe(from.userId);
  expect(got.encryptionInfo).toMatchObject({
    sender: from.userId,
    senderDevice: from.deviceId,
    senderCurve25519KeyBase64: (await from.crypto.getOwnDeviceKeys()).curve25519,
  });
  const onTheWire = to.syncResponses.flatMap((s) => s.to_device?.events ?? []).filter((e) => e.sender === from.userId && e.type === 'm.room.encrypted');
  expect(onTheWire.length).toBeGreaterThan(0);
  expect(onTheWire.every((e) => e.content.algorithm === 'm.olm.v1.curve25519-aes-sha2')).toBe(true);
  expect(JSON.stringify(to.syncResponses)).not.toContain(text);
}
