import { CanonicalJsonError, canonicalJsonByteLength } from '../matrix/canonical-json.ts';
import { MatrixError } from '../errors/matrix-error.ts';
import { parseUserId } from '../matrix/user-id.ts';
import type { Db } from '../storage/database.ts';
import {
  DeviceInboxStore,
  type DeviceSelector,
  type EnqueueRequest,
  type DeliveredMessage,
  type EnqueueResult,
  type InboxMessage,
  type LockedDevice,
  type Watched,
} from '../storage/device-inbox-store.ts';
import type { AppserviceRegistry } from '../appservice/registration.ts';
import { AppserviceQueueStore, type AppserviceMessage } from '../storage/appservice-queue-store.ts';
import { FederationInboundStore } from '../storage/federation-inbound-store.ts';
import { FederationOutboxStore, type OutboxMessage } from '../storage/federation-outbox-store.ts';
import { NewMessages } from '../storage/new-messages.ts';
import { TxnStore, type TxnKey } from '../storage/txn-store.ts';
import { STORED_COUNTER, type Counters } from './counters.ts';
import { GroupCommit } from './group-commit.ts';
import type { Notifier } from './notifier.ts';

/** Synapse's cap, which we share so that what we accept can be relayed to Synapse peers. */
export const MAX_CONTENT_BYTES = 65_536;

export type Origin = 'client' | 'federation' | 'appservice';

/** A message addressed to the server user `@:<server_name>`, handed to dispatch, never stored. */
export interface ServerUserMessage {
  type: string;
  sender: string;
  senderDevice: string | null;
  origin: Origin;
  content: Record<string, unknown>;
}

export interface SendToDeviceInput {
  sender: string;
  senderDevice: string | null;
  type: string;
  origin: Origin;
  /** user ID → device ID (or `*`) → content */
  messages: Record<string, Record<string, Record<string, unknown>>>;
  /** Set for client requests: makes a retry return the first response with no new effect. */
  txn?: TxnKey;
  /** Set for federation EDUs: (origin, message_id), applied once. */
  inboundMessage?: { origin: string; messageId: string };
  /** Federation: only this server's users may be addressed; others are dropped, never relayed. */
  localOnly?: boolean;
}

export interface ToDeviceServiceDeps {
  db: Db;
  serverName: string;
  notifier: Notifier;
  counters: Counters;
  /** Receives the server user's messages after the request's own messages are stored. */
  dispatchToServerUser?: (messages: ServerUserMessage[]) => Promise<void>;
  /** Told which destinations got new outbox rows, after they are committed. */
  onRemoteQueued?: (destinations: string[]) => void;
  /** Appservices that take to-device messages for their users (MSC4203). */
  appservices?: AppserviceRegistry;
  onAppserviceQueued?: (appserviceIds: string[]) => void;
  /** Tells other processes which devices got messages (PostgreSQL NOTIFY). */
  publishWake?: (devices: { userId: string; deviceId: string }[]) => void;
}

const DROPPED = 'to_device_dropped_total';

/**
 * Batches of local sends in the database at once. One: while a batch commits the next one
 * fills, so batches grow with the load. Measured (S1, 32 senders to one device, same run):
 * 1 → 0.91 × F2, 2 → 0.73, 4 → 0.54; a second batch in flight mostly waits on the first's
 * device row locks, and the batches it takes are smaller.
 */
const ENQUEUE_CONCURRENCY = 1;

/** Rolls back a transaction whose txn id turned out to be a duplicate. */
class DuplicateTxn extends Error {}

/**
 * The rules of send-to-device: the size cap, `*` expansion, the local / remote / server-user
 * split, txn idempotency, one database transaction per request, then wake-ups.
 */
export class ToDeviceService {
  readonly serverUserId: string;

  /** Concurrent local sends share statements (and device row locks), see {@link GroupCommit}. */
  private readonly enqueue: GroupCommit<EnqueueRequest, EnqueueResult>;

  constructor(private readonly deps: ToDeviceServiceDeps) {
    this.serverUserId = `@:${deps.serverName}`;
    const inbox = new DeviceInboxStore(deps.db);
    this.enqueue = new GroupCommit({
      flush: (requests) => inbox.claimAndEnqueueMany(requests),
      concurrency: ENQUEUE_CONCURRENCY,
      maxItems: 500,
      // Rows per statement stay well inside what one round trip should carry.
      maxWeight: 5000,
      weightOf: (q) => Math.max(1, q.targets.length),
      keyOf: (q) => (q.txn === null ? null : JSON.stringify([q.txn.userId, q.txn.deviceId, q.txn.endpoint, q.txn.txnId])),
    });
  }

  /** What handler modules send: sender `@:<server_name>`, no txn id, never to the server user. */
  async sendAsServer(userId: string, deviceId: string, type: string, content: Record<string, unknown>): Promise<void> {
    if (userId === this.serverUserId) {
      // A handler messaging the server user would dispatch to handlers again, possibly forever.
      throw new Error('handlers cannot send to the server user itself');
    }
    await this.send({ sender: this.serverUserId, senderDevice: null, type, origin: 'client', messages: { [userId]: { [deviceId]: content } } });
  }

  async send(input: SendToDeviceInput): Promise<Record<string, unknown>> {
    const { counters } = this.deps;
    for (const byDevice of Object.values(input.messages)) {
      for (const content of Object.values(byDevice)) checkContent(content);
    }

    const selectors: DeviceSelector[] = [];
    const requested = new Map<string, Record<string, Record<string, unknown>>>();
    const remote: OutboxMessage[] = [];
    const serverUser: ServerUserMessage[] = [];
    for (const [userId, byDevice] of Object.entries(input.messages)) {
      if (userId === this.serverUserId) {
        // MSC4246: the server user has the one device "", and "*" is rewritten to it, so a
        // request naming both still reaches the handler once.
        const content = byDevice[''] ?? byDevice['*'];
        if (content !== undefined) {
          serverUser.push({ type: input.type, sender: input.sender, senderDevice: input.senderDevice, origin: input.origin, content });
        }
        const others = Object.keys(byDevice).length - (content === undefined ? 0 : 1);
        counters.inc(DROPPED, { reason: 'server_user_device' }, others);
        continue;
      }
      // Other servers' server users (empty localpart) are reachable over federation.
      const parsed = parseUserId(userId, { allowEmptyLocalpart: true });
      if (parsed === null) {
        counters.inc(DROPPED, { reason: 'invalid_user' }, Object.keys(byDevice).length);
        continue;
      }
      if (parsed.serverName !== this.deps.serverName) {
        if (input.localOnly === true) {
          counters.inc(DROPPED, { reason: 'not_local' }, Object.keys(byDevice).length);
          continue;
        }
        for (const [deviceId, content] of Object.entries(byDevice)) {
          remote.push({
            destination: parsed.serverName,
            sender: input.sender,
            type: input.type,
            userId,
            deviceId,
            content: JSON.stringify(content),
          });
        }
        continue;
      }
      const deviceIds = Object.keys(byDevice);
      requested.set(userId, byDevice);
      selectors.push(
        deviceIds.includes('*') ? { userId, all: true } : { userId, all: false, deviceIds },
      );
    }

    const response: Record<string, unknown> = {};
    const registry = this.deps.appservices;
    const simple =
      remote.length === 0 &&
      input.inboundMessage === undefined &&
      (registry === undefined || [...requested.keys()].every((u) => registry.recipientsFor(u).length === 0));
    if (simple) {
      const done = await this.sendLocalOnly(input, requested);
      if (done === 'duplicate') return this.previousResponse(input.txn);
      await this.dispatch(serverUser);
      return response;
    }
    if (input.txn !== undefined) {
      const previous = await new TxnStore(this.deps.db).getResponse(input.txn);
      if (previous !== null) return JSON.parse(previous) as Record<string, unknown>;
    }

    let woken: { userId: string; deviceId: string; news: NewMessages | undefined }[];
    let appservicesQueued: string[] = [];
    let stored = 0;
    try {
      woken = await this.deps.db.transaction(async (tx) => {
        if (input.txn !== undefined && !(await new TxnStore(tx).claim(input.txn, JSON.stringify(response)))) {
          throw new DuplicateTxn();
        }
        const inbound = input.inboundMessage;
        if (inbound !== undefined && !(await new FederationInboundStore(tx).claim(inbound.origin, inbound.messageId))) {
          throw new DuplicateTxn();
        }
        const inbox = new DeviceInboxStore(tx);
        const existing = await inbox.lockTargetDevices(
          selectors,
          this.watched([...requested].flatMap(([userId, byDevice]) => Object.keys(byDevice).map((deviceId) => ({ userId, deviceId })))),
        );
        const devicesOf = new Map<string, Set<string>>();
        for (const d of existing) {
          let set = devicesOf.get(d.userId);
          if (set === undefined) devicesOf.set(d.userId, (set = new Set()));
          set.add(d.deviceId);
        }
        const rows: InboxMessage[] = [];
        for (const [userId, byDevice] of requested) {
          const known = devicesOf.get(userId) ?? new Set<string>();
          for (const [deviceId, content] of Object.entries(byDevice)) {
            const text = JSON.stringify(content);
            if (deviceId === '*') {
              for (const target of known) rows.push({ userId, deviceId: target, sender: input.sender, type: input.type, content: text });
            } else if (known.has(deviceId)) {
              rows.push({ userId, deviceId, sender: input.sender, type: input.type, content: text });
            } else {
              counters.inc(DROPPED, { reason: known.size === 0 ? 'unknown_user' : 'unknown_device' });
            }
          }
        }
        const streamIds = await inbox.insert(rows);
        stored = rows.length;
        await new FederationOutboxStore(tx).insert(remote);
        const owed = appserviceCopiesOf(this.deps.appservices, rows, streamIds);
        await new AppserviceQueueStore(tx).insert(owed);
        appservicesQueued = [...new Set(owed.map((m) => m.appserviceId))];
        return newMessagesOf(existing, rows, streamIds);
      });
    } catch (e) {
      if (e instanceof DuplicateTxn && input.txn === undefined) {
        counters.inc(DROPPED, { reason: 'duplicate_edu' });
        return response;
      }
      if (e instanceof DuplicateTxn && input.txn !== undefined) return this.previousResponse(input.txn);
      throw e;
    }
    counters.inc(STORED_COUNTER, {}, stored);
    for (const d of woken) this.deps.notifier.notify(d.userId, d.deviceId, d.news);
    if (woken.length > 0) this.deps.publishWake?.(woken);
    if (remote.length > 0) this.deps.onRemoteQueued?.([...new Set(remote.map((r) => r.destination))]);
    if (appservicesQueued.length > 0) this.deps.onAppserviceQueued?.(appservicesQueued);

    await this.dispatch(serverUser);
    return response;
  }

  /**
   * Local recipients only (the common case): one statement claims the txn id, locks and
   * inserts; then the stored devices' long-polls are woken.
   */
  private async sendLocalOnly(
    input: SendToDeviceInput,
    requested: Map<string, Record<string, Record<string, unknown>>>,
  ): Promise<'stored' | 'duplicate'> {
    const targets: { userId: string; deviceId: string; content: string }[] = [];
    for (const [userId, byDevice] of requested) {
      for (const [deviceId, content] of Object.entries(byDevice)) targets.push({ userId, deviceId, content: JSON.stringify(content) });
    }
    const result = await this.enqueue.run({ txn: input.txn ?? null, sender: input.sender, type: input.type, targets, watch: this.watched(targets) });
    if (!result.claimed) return 'duplicate';
    this.deps.counters.inc(STORED_COUNTER, {}, result.stored.length);
    const storedPair = new Set(result.stored.map((d) => `${d.userId}\u0000${d.deviceId}`));
    for (const t of targets) {
      if (t.deviceId !== '*' && !storedPair.has(`${t.userId}\u0000${t.deviceId}`)) {
        this.deps.counters.inc(DROPPED, { reason: result.knownUsers.has(t.userId) ? 'unknown_device' : 'unknown_user' });
      }
    }
    const woken = [...new Map(result.stored.map((d) => [`${d.userId}\u0000${d.deviceId}`, d])).values()];
    for (const d of woken) this.deps.notifier.notify(d.userId, d.deviceId, d.news);
    if (woken.length > 0) this.deps.publishWake?.(woken);
    return 'stored';
  }

  /** The targeted devices with a long-poll waiting in this process, whose wake-ups carry the messages (NewMessages). */
  private watched(targets: readonly { userId: string; deviceId: string }[]): Watched[] {
    const { notifier } = this.deps;
    const out: Watched[] = [];
    for (const { userId, deviceId } of targets) {
      if (deviceId === '*') for (const d of notifier.waitingDevices(userId)) out.push({ userId, deviceId: d });
      else if (notifier.isWaiting(userId, deviceId)) out.push({ userId, deviceId });
    }
    return out;
  }

  private async previousResponse(txn: TxnKey | undefined): Promise<Record<string, unknown>> {
    const previous = txn === undefined ? null : await new TxnStore(this.deps.db).getResponse(txn);
    return previous === null ? {} : (JSON.parse(previous) as Record<string, unknown>);
  }

  private async dispatch(serverUser: ServerUserMessage[]): Promise<void> {
    if (serverUser.length === 0) return;
    if (this.deps.dispatchToServerUser === undefined) {
      this.deps.counters.inc(DROPPED, { reason: 'no_handler' }, serverUser.length);
    } else {
      await this.deps.dispatchToServerUser(serverUser);
    }
  }
}

/** Per locked device that got messages: its newest queued message before them, and them, for its long-polls. */
function newMessagesOf(
  locked: readonly LockedDevice[],
  rows: readonly InboxMessage[],
  streamIds: readonly number[],
): { userId: string; deviceId: string; news: NewMessages | undefined }[] {
  const messagesOf = new Map<string, DeliveredMessage[]>();
  rows.forEach((row, i) => {
    const key = `${row.userId}\u0000${row.deviceId}`;
    let list = messagesOf.get(key);
    if (list === undefined) messagesOf.set(key, (list = []));
    list.push({ streamId: streamIds[i] as number, sender: row.sender, type: row.type, content: row.content });
  });
  const out: { userId: string; deviceId: string; news: NewMessages | undefined }[] = [];
  for (const d of locked) {
    const messages = messagesOf.get(`${d.userId}\u0000${d.deviceId}`);
    if (messages === undefined) continue;
    const news = d.newestStreamId === null ? undefined : new NewMessages(d.newestStreamId, messages);
    out.push({ userId: d.userId, deviceId: d.deviceId, news });
  }
  return out;
}

/** Which stored messages an appservice is owed too. */
function appserviceCopiesOf(registry: AppserviceRegistry | undefined, rows: readonly InboxMessage[], streamIds: readonly number[]): AppserviceMessage[] {
  if (registry === undefined || registry.all.length === 0) return [];
  const out: AppserviceMessage[] = [];
  rows.forEach((row, i) => {
    for (const { as, exclusive } of registry.recipientsFor(row.userId)) {
      out.push({
        appserviceId: as.id,
        inboxStreamId: streamIds[i] ?? null,
        exclusive,
        type: row.type,
        sender: row.sender,
        content: row.content,
        toUserId: row.userId,
        toDeviceId: row.deviceId,
      });
    }
  });
  return out;
}

function checkContent(content: Record<string, unknown>): void {
  let size: number;
  try {
    size = canonicalJsonByteLength(content);
  } catch (e) {
    if (e instanceof CanonicalJsonError) throw new MatrixError('M_BAD_JSON', `Message content is not canonical JSON: ${e.message}`);
    throw e;
  }
  if (size > MAX_CONTENT_BYTES) {
    throw new MatrixError('M_TOO_LARGE', `A message's content is ${size} bytes; the limit is ${MAX_CONTENT_BYTES}`);
  }
}
