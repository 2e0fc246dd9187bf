import { checkContent } from '../shared/content-checks.ts';
import type { Origin } from '../sdk/define-handler.ts';
import { MatrixError } from '../errors/matrix-error.ts';
import { parseUserId } from '../shared/user-id.ts';
import type { Db } from '../storage/database.ts';
import {
  DeviceInboxStore,
  type DeviceSelector,
  type EnqueueRequest,
  type DeliveredMessage,
  type EnqueueResult,
  type InboxMessage,
  type LockedDevice,
  type RequestKey,
  type Watched,
} from '../storage/device-inbox-store.ts';
import type { AppserviceRegistry } from '../appservice/registration.ts';
import { AppserviceQueueStore, type AppserviceMessage } from '../storage/appservice-queue-store.ts';
import { FederationInboundStore } from '../storage/federation-inbound-store.ts';
import { FederationOutboxStore } from '../storage/federation-outbox-store.ts';
import { LazyCommits } from '../storage/lazy-commits.ts';
import { NewMessages } from '../storage/new-messages.ts';
import { TxnStore, type TxnKey } from '../storage/txn-store.ts';
import { GROUP_COMMIT_BATCH_SIZE, LAZY_COMMIT_FLUSHES, STORED_COUNTER, type Counters } from './counters.ts';
import { GroupCommit } from './group-commit.ts';
import type { Notifier } from './notifier.ts';
import { REQUEST_TYPES, STALE_DROPPED, cancellationKeyOf } from './stale-requests.ts';

export { MAX_CONTENT_BYTES } from '../shared/content-checks.ts';
export type { Origin } from '../sdk/define-handler.ts';

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
 * Group-commit batches (of every kind of send) in the database at once. One: while a batch commits the next one
 * fills, so batches grow with the load. Measured (S1, 32 senders to one device, same run):
 * 1 → 0.91 × F2, 2 → 0.73, 4 → 0.54; a second batch in flight mostly waits on the first's
 * device row locks, and the batches it takes are smaller.
 */
const ENQUEUE_CONCURRENCY = 1;

/** Most rows (local targets, `*` counting one, plus remote messages) of one group-commit batch. */
const MAX_BATCH_WEIGHT = 5000;

/** One send, checked and split: what goes to the database, and what to the server user. */
interface PreparedSend {
  input: SendToDeviceInput;
  request: EnqueueRequest;
  serverUser: ServerUserMessage[];
  weight: number;
  /**
   * MSC3944: for a key or secret request cancellation, the key each target names (aligned with
   * `request.targets`; null for a target an appservice also receives). Null for any other send.
   */
  cancels: (ReturnType<typeof cancellationKeyOf> | null)[] | null;
}

/**
 * The rules of send-to-device: the size cap, `*` expansion, the local / remote / server-user
 * split, txn idempotency, one statement (or one database transaction) per request or per
 * federation transaction, then wake-ups.
 */
export class ToDeviceService {
  readonly serverUserId: string;

  /** Concurrent sends share statements (and device row locks), see {@link GroupCommit}. */
  private readonly enqueue: GroupCommit<EnqueueRequest, EnqueueResult>;
  /** Claims for the server user alone commit lazily and are made durable before the answer. */
  private readonly lazy: LazyCommits;

  constructor(private readonly deps: ToDeviceServiceDeps) {
    this.serverUserId = `@:${deps.serverName}`;
    this.lazy = new LazyCommits(deps.db, () => deps.counters.inc(LAZY_COMMIT_FLUSHES));
    const inbox = new DeviceInboxStore(deps.db, this.lazy);
    this.enqueue = new GroupCommit({
      flush: (requests) => inbox.claimAndEnqueueMany(requests),
      concurrency: ENQUEUE_CONCURRENCY,
      maxItems: 500,
      // Rows per statement stay well inside what one round trip should carry.
      maxWeight: MAX_BATCH_WEIGHT,
      weightOf: weightOf,
      keyOf: (q) =>
        q.txn !== null
          ? JSON.stringify([q.txn.userId, q.txn.deviceId, q.txn.endpoint, q.txn.txnId])
          : q.inbound != null
            ? JSON.stringify(['edu', q.inbound.origin, q.inbound.messageId])
            : null,
      onBatch: (items) => deps.counters.observe(GROUP_COMMIT_BATCH_SIZE, {}, items),
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
    const prepared = this.prepare(input);
    // A fan-out heavier than a whole batch (thousands of remote users) is written in chunks
    // with the event loop free between them, rather than as one long statement.
    // Cancellations of key and secret requests take the transaction path (see stale-requests.ts).
    const result =
      prepared.weight > MAX_BATCH_WEIGHT || prepared.cancels !== null
        ? ((await this.storeInTransaction([prepared]))[0] as EnqueueResult)
        : await this.enqueue.run(prepared.request);
    if (!result.claimed) {
      // The first claim may have been lazy and its own request not answered yet.
      await this.lazy.makeDurable(this.lazy.mark());
      if (input.txn !== undefined) return this.previousResponse(input.txn);
      this.deps.counters.inc(DROPPED, { reason: 'duplicate_edu' });
      return {};
    }
    this.afterStored([prepared], [result]);
    await this.dispatch(prepared.serverUser);
    if (result.lazyMark !== undefined) await this.lazy.makeDurable(result.lazyMark);
    return {};
  }

  /**
   * Several sends (one federation transaction's EDUs) stored in one statement: all of them or,
   * if the database fails, none, and the error is thrown. A send whose content is refused
   * (too large, not canonical JSON) is left out and handed to `refused`; a repeated
   * (origin, message_id) is applied once. Each woken device is woken once.
   */
  async sendAll(inputs: readonly SendToDeviceInput[], refused: (input: SendToDeviceInput, error: MatrixError) => void): Promise<void> {
    const prepared: PreparedSend[] = [];
    const seen = new Set<string>();
    for (const input of inputs) {
      const key = input.inboundMessage === undefined ? null : JSON.stringify([input.inboundMessage.origin, input.inboundMessage.messageId]);
      if (key !== null && seen.has(key)) {
        this.deps.counters.inc(DROPPED, { reason: 'duplicate_edu' });
        continue;
      }
      try {
        prepared.push(this.prepare(input));
      } catch (e) {
        if (e instanceof MatrixError && e.status < 500) {
          refused(input, e);
          continue;
        }
        throw e;
      }
      if (key !== null) seen.add(key);
    }
    // With a cancellation among them, all of them in one transaction, in order (see stale-requests.ts).
    const results = prepared.some((p) => p.cancels !== null)
      ? await this.storeInTransaction(prepared)
      : await this.enqueue.runAll(prepared.map((p) => p.request));
    const claimed = prepared.filter((_, i) => results[i]?.claimed === true);
    const duplicates = prepared.length - claimed.length;
    if (duplicates > 0) this.deps.counters.inc(DROPPED, { reason: 'duplicate_edu' }, duplicates);
    this.afterStored(
      claimed,
      results.filter((r) => r.claimed),
    );
    await this.dispatch(claimed.flatMap((p) => p.serverUser));
    // One group, so one statement: every result has the same mark, or none. A duplicate's first
    // claim may have been lazy too.
    const lazyMark = duplicates > 0 ? this.lazy.mark() : results[0]?.lazyMark;
    if (lazyMark !== undefined) await this.lazy.makeDurable(lazyMark);
  }

  /** Checks the contents and splits the messages by where they go; refusals throw, and nothing is stored. */
  private prepare(input: SendToDeviceInput): PreparedSend {
    const { counters } = this.deps;
    for (const byDevice of Object.values(input.messages)) {
      for (const content of Object.values(byDevice)) checkContent(content);
    }
    const targets: { userId: string; deviceId: string; content: string }[] = [];
    const remote: { destination: string; userId: string; deviceId: string; content: string }[] = [];
    const appservices: { userId: string; appserviceId: string; exclusive: boolean }[] = [];
    const serverUser: ServerUserMessage[] = [];
    // MSC3944: only a cancellation's key is looked for, so other sends pay one type check.
    const cancelling = REQUEST_TYPES.has(input.type);
    const cancels: (ReturnType<typeof cancellationKeyOf> | null)[] = [];
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
          remote.push({ destination: parsed.serverName, userId, deviceId, content: JSON.stringify(content) });
        }
        continue;
      }
      for (const [deviceId, content] of Object.entries(byDevice)) targets.push({ userId, deviceId, content: JSON.stringify(content) });
      const recipients = this.deps.appservices?.recipientsFor(userId) ?? [];
      for (const { as, exclusive } of recipients) appservices.push({ userId, appserviceId: as.id, exclusive });
      if (cancelling) {
        // An appservice's transactions are readers that leave no trace: its users are left alone.
        for (const content of Object.values(byDevice)) cancels.push(recipients.length > 0 ? null : cancellationKeyOf(input.type, content));
      }
    }
    const request: EnqueueRequest = {
      txn: input.txn ?? null,
      inbound: input.inboundMessage ?? null,
      sender: input.sender,
      type: input.type,
      targets,
      remote,
      appservices,
      watch: this.watched(targets),
    };
    return { input, request, serverUser, weight: weightOf(request), cancels: cancels.some((k) => k !== null) ? cancels : null };
  }

  /** After the commit: counters, each stored device woken once, the senders told of new work. */
  private afterStored(prepared: readonly PreparedSend[], results: readonly EnqueueResult[]): void {
    const { counters, notifier } = this.deps;
    const woken = new Map<string, { userId: string; deviceId: string; news: EnqueueResult['stored'][number]['news'] }>();
    const destinations = new Set<string>();
    const appservices = new Set<string>();
    prepared.forEach((p, i) => {
      const result = results[i] as EnqueueResult;
      counters.inc(STORED_COUNTER, {}, result.stored.length);
      const storedPair = new Set(result.stored.map((d) => `${d.userId}\u0000${d.deviceId}`));
      for (const t of p.request.targets) {
        const pair = `${t.userId}\u0000${t.deviceId}`;
        if (t.deviceId !== '*' && !storedPair.has(pair) && result.staleDropped?.has(pair) !== true) {
          counters.inc(DROPPED, { reason: result.knownUsers.has(t.userId) ? 'unknown_device' : 'unknown_user' });
        }
      }
      for (const d of result.stored) {
        const key = `${d.userId}\u0000${d.deviceId}`;
        if (!woken.has(key)) woken.set(key, d);
      }
      for (const m of p.request.remote ?? []) destinations.add(m.destination);
      for (const id of result.appservicesQueued) appservices.add(id);
    });
    for (const d of woken.values()) notifier.notify(d.userId, d.deviceId, d.news);
    if (woken.size > 0) this.deps.publishWake?.([...woken.values()]);
    if (destinations.size > 0) this.deps.onRemoteQueued?.([...destinations]);
    if (appservices.size > 0) this.deps.onAppserviceQueued?.([...appservices]);
  }

  /**
   * One database transaction for sends the group-commit statement does not take: a request too
   * heavy for one statement (its inserts in chunks, see FederationOutboxStore.insert), and sends
   * with key or secret request cancellations (MSC3944, see stale-requests.ts). Sends are applied
   * in order, each seeing the ones before it; the target devices of all of them are locked first,
   * in one statement and a fixed order, as the group-commit statement locks them.
   */
  private async storeInTransaction(prepared: readonly PreparedSend[]): Promise<EnqueueResult[]> {
    const results = await this.deps.db.transaction(async (tx) => {
      const claimed: boolean[] = [];
      for (const { request } of prepared) {
        // A refused claim wrote nothing, so the transaction goes on with the other sends.
        let ok = request.txn === null || (await new TxnStore(tx).claim(request.txn, '{}'));
        const inbound = request.inbound;
        if (ok && inbound != null) ok = await new FederationInboundStore(tx).claim(inbound.origin, inbound.messageId);
        claimed.push(ok);
      }
      const selectors = new Map<string, DeviceSelector>();
      prepared.forEach(({ request }, i) => {
        if (!claimed[i]) return;
        for (const t of request.targets) {
          const current = selectors.get(t.userId);
          if (t.deviceId === '*') selectors.set(t.userId, { userId: t.userId, all: true });
          else if (current === undefined) selectors.set(t.userId, { userId: t.userId, all: false, deviceIds: [t.deviceId] });
          else if (!current.all) current.deviceIds.push(t.deviceId);
        }
      });
      const inbox = new DeviceInboxStore(tx);
      // Watched devices' news is per send; with several sends, their polls read the queue instead.
      const watch = prepared.length === 1 ? (prepared[0]?.request.watch ?? []) : [];
      const locked = await inbox.lockTargetDevices([...selectors.values()], watch);
      const devicesOf = new Map<string, string[]>();
      for (const d of locked) {
        let list = devicesOf.get(d.userId);
        if (list === undefined) devicesOf.set(d.userId, (list = []));
        list.push(d.deviceId);
      }
      const results: EnqueueResult[] = [];
      for (const [i, { request, cancels }] of prepared.entries()) {
        if (!claimed[i]) {
          results.push({ claimed: false, stored: [], knownUsers: new Set(), appservicesQueued: [] });
          continue;
        }
        const rows: InboxMessage[] = [];
        // Per row, the cancellation key it carries (MSC3944), as `user\0device\0requesting device\0request id`.
        const keyOfRow: (string | null)[] = [];
        const keys = new Map<string, RequestKey>();
        request.targets.forEach((t, o) => {
          const known = devicesOf.get(t.userId) ?? [];
          const to = t.deviceId === '*' ? known : known.includes(t.deviceId) ? [t.deviceId] : [];
          const cancel = cancels?.[o] ?? null;
          for (const deviceId of to) {
            rows.push({ userId: t.userId, deviceId, sender: request.sender, type: request.type, content: t.content });
            if (cancel === null) {
              keyOfRow.push(null);
              continue;
            }
            const key = { userId: t.userId, deviceId, ...cancel };
            const k = requestKeyString(key);
            keys.set(k, key);
            keyOfRow.push(k);
          }
        });
        const staleDropped = new Set<string>();
        const dropped = keys.size === 0 ? null : await this.dropStaleRequests(inbox, request.sender, request.type, [...keys.values()]);
        const kept: InboxMessage[] = [];
        rows.forEach((row, r) => {
          const k = keyOfRow[r];
          if (dropped === null || k === null || k === undefined || !dropped.keys.has(k)) kept.push(row);
          else staleDropped.add(`${row.userId}\u0000${row.deviceId}`);
        });
        // Counted once committed (see storeInTransaction's caller).
        const staleCount = (dropped?.requestsDeleted ?? 0) + rows.length - kept.length;
        const streamIds = await inbox.insert(kept);
        await new FederationOutboxStore(tx).insert((request.remote ?? []).map((m) => ({ ...m, sender: request.sender, type: request.type })));
        const owed = appserviceCopiesOf(request.appservices ?? [], kept, streamIds);
        await new AppserviceQueueStore(tx).insert(owed);
        results.push({
          claimed: true,
          stored: newMessagesOf(locked, kept, streamIds),
          knownUsers: new Set(request.targets.map((t) => t.userId).filter((u) => devicesOf.has(u))),
          appservicesQueued: [...new Set(owed.map((m) => m.appserviceId))],
          staleDropped,
          staleCount,
        });
      }
      return results;
    });
    prepared.forEach(({ request }, i) => this.deps.counters.inc(STALE_DROPPED, { type: request.type }, results[i]?.staleCount ?? 0));
    return results;
  }

  /**
   * MSC3944, steps (1)–(3) of stale-requests.ts, inside the transaction holding the devices'
   * row locks: deletes the undelivered requests each cancellation removes, and answers how many
   * and the keys (see requestKeyString) whose cancellation is therefore not stored.
   */
  private async dropStaleRequests(
    inbox: DeviceInboxStore,
    sender: string,
    type: string,
    keys: readonly RequestKey[],
  ): Promise<{ keys: Set<string>; requestsDeleted: number }> {
    // (1) The key's queued rows, locked: waits for any sync still recording one of them as read.
    const queued = await inbox.lockRequestsWithKeys(sender, type, keys);
    // (2) A statement of its own, so a snapshot taken after those waits.
    const read = new Set((await inbox.takeRequestReads(sender, type, keys)).map(requestKeyString));
    // (3) Per key: the requests after its last row that is not one, unless one of its requests was read.
    const trailing = new Map<string, number[]>();
    for (const row of queued) {
      const k = requestKeyString(row);
      if (row.action !== 'request') trailing.set(k, []);
      else {
        const list = trailing.get(k);
        if (list === undefined) trailing.set(k, [row.streamId]);
        else list.push(row.streamId);
      }
    }
    const drop = new Set<string>();
    const ids: number[] = [];
    for (const [k, list] of trailing) {
      if (list.length === 0 || read.has(k)) continue;
      drop.add(k);
      ids.push(...list);
    }
    return { keys: drop, requestsDeleted: await inbox.deleteByIds(ids) };
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

/** Rows a request may write: local targets (`*` counting one) and remote messages. */
function weightOf(q: EnqueueRequest): number {
  return Math.max(1, q.targets.length + (q.remote?.length ?? 0));
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
function appserviceCopiesOf(
  owedTo: readonly { userId: string; appserviceId: string; exclusive: boolean }[],
  rows: readonly InboxMessage[],
  streamIds: readonly number[],
): AppserviceMessage[] {
  if (owedTo.length === 0) return [];
  const out: AppserviceMessage[] = [];
  rows.forEach((row, i) => {
    for (const { userId, appserviceId, exclusive } of owedTo) {
      if (userId !== row.userId) continue;
      out.push({
        appserviceId,
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

/** A cancellation key as one string, to match rows, records and targets by. */
function requestKeyString(k: RequestKey): string {
  return `${k.userId}\u0000${k.deviceId}\u0000${k.requestingDeviceId}\u0000${k.requestId}`;
}

