import { MatrixError } from '../errors/matrix-error.ts';
import type { Db } from '../storage/drivers/database.ts';
import type { AppserviceRegistry } from '../appservice/registration.ts';
import { LazyCommits } from '../storage/drivers/lazy-commits.ts';
import { TxnStore } from '../storage/txn-store.ts';
import { SendStatement, type EnqueueRequest, type EnqueueResult, type StatementWake, type Watched } from '../storage/send-statement.ts';
import { GROUP_COMMIT_BATCH_SIZE, LAZY_COMMIT_FLUSHES, STORED_COUNTER, type Counters } from '../metrics/counters.ts';
import { GroupCommit } from '../runtime/group-commit.ts';
import type { Notifier } from '../runtime/notifier.ts';
import { planSend, type PlanContext, type SendPlan, type SendToDeviceInput, type ServerUserInbox, type ServerUserMessage } from './send-plan.ts';
import { MAX_STATEMENT_ROWS, storeInTransaction, type TransactionResult } from './send-transaction.ts';
import { STALE_DROPPED } from './stale-requests.ts';

export { MAX_CONTENT_BYTES } from '../shared/content-checks.ts';
export type { Origin } from '../sdk/define-handler.ts';
export type { SendToDeviceInput, ServerUserMessage } from './send-plan.ts';

export interface ToDeviceServiceDeps {
  db: Db;
  serverName: string;
  notifier: Notifier;
  counters: Counters;
  /** Told which destinations got new outbox rows, after they are committed. */
  onRemoteQueued?: (destinations: string[]) => void;
  /** Appservices that take to-device messages for their users (MSC4203). */
  appservices?: AppserviceRegistry;
  onAppserviceQueued?: (appserviceIds: string[]) => void;
  /** Tells other processes which devices got messages (PostgreSQL NOTIFY), for sends stored by a transaction. */
  publishWake?: (devices: { userId: string; deviceId: string }[]) => void;
  /** The group-commit statement's own NOTIFY (channel, this process's name): see SendStatement. */
  wakeInStatement?: StatementWake;
}

const DROPPED = 'to_device_dropped_total';

/**
 * Group-commit batches (of every kind of send) in the database at once. One: while a batch commits the next one
 * fills, so batches grow with the load. Measured (S1, 32 senders to one device, same run):
 * 1 → 0.91 × F2, 2 → 0.73, 4 → 0.54; a second batch in flight mostly waits on the first's
 * device row locks, and the batches it takes are smaller.
 */
const ENQUEUE_CONCURRENCY = 1;

/** One send, planned, and what the statement is given for it. */
interface PlannedSend {
  input: SendToDeviceInput;
  plan: SendPlan;
  request: EnqueueRequest;
}

/**
 * Send-to-device, in four steps: plan (send-plan.ts: pure), store (one send statement per
 * group-commit batch, or the transaction path), then for the sends whose claim was new: count,
 * wake, tell the senders, and dispatch the server user's messages. A retry stores and counts
 * nothing.
 */
export class ToDeviceService {
  readonly serverUserId: string;

  /** Concurrent sends share statements (and device row locks), see {@link GroupCommit}. */
  private readonly enqueue: GroupCommit<EnqueueRequest, EnqueueResult>;
  /** Claims for the server user alone commit lazily and are made durable before the answer. */
  private readonly lazy: LazyCommits;
  private readonly planContext: PlanContext;
  private serverUser: ServerUserInbox | null = null;

  constructor(private readonly deps: ToDeviceServiceDeps) {
    this.serverUserId = `@:${deps.serverName}`;
    this.lazy = new LazyCommits(deps.db, () => deps.counters.inc(LAZY_COMMIT_FLUSHES));
    const statement = new SendStatement(deps.db, this.lazy, deps.wakeInStatement);
    this.enqueue = new GroupCommit({
      flush: (requests) => statement.run(requests),
      concurrency: ENQUEUE_CONCURRENCY,
      maxItems: 500,
      // Rows per statement stay well inside what one round trip should carry.
      maxWeight: MAX_STATEMENT_ROWS,
      weightOf: weightOf,
      keyOf: (q) =>
        q.txn !== null
          ? JSON.stringify([q.txn.userId, q.txn.deviceId, q.txn.endpoint, q.txn.txnId])
          : q.inbound != null
            ? JSON.stringify(['edu', q.inbound.origin, q.inbound.messageId])
            : null,
      onBatch: (items) => deps.counters.observe(GROUP_COMMIT_BATCH_SIZE, {}, items),
    });
    const registry = deps.appservices;
    this.planContext = {
      serverName: deps.serverName,
      appserviceRecipients: (userId) => (registry?.recipientsFor(userId) ?? []).map((r) => ({ appserviceId: r.as.id, exclusive: r.exclusive })),
    };
  }

  /** Where messages to the server user go (the dispatcher, which sends back through {@link sendAsServer}); dropped until set. */
  deliverServerUserMessagesTo(inbox: ServerUserInbox): void {
    this.serverUser = inbox;
  }

  /** What handler modules send: sender `@:<server_name>`, no txn id, never to the server user. */
  async sendAsServer(userId: string, deviceId: string, type: string, content: Record<string, unknown>): Promise<void> {
    if (userId === this.serverUserId) {
      // A handler messaging the server user would dispatch to handlers again, possibly forever.
      throw new Error('handlers cannot send to the server user itself');
    }
    await this.send({ sender: this.serverUserId, senderDevice: null, type, origin: 'client', messages: { [userId]: { [deviceId]: content } } });
  }

  /** One send; a refusal (content) throws a MatrixError and stores nothing. The answer is always `{}`. */
  async send(input: SendToDeviceInput): Promise<Record<string, unknown>> {
    const planned = this.planned(input);
    // A fan-out heavier than one statement (thousands of remote users) is written in parts,
    // with the event loop free between them, rather than as one long statement.
    // Cancellations of key and secret requests take the transaction path (see stale-requests.ts).
    const result: EnqueueResult | TransactionResult =
      planned.plan.weight > MAX_STATEMENT_ROWS || planned.plan.cancels !== null
        ? ((await storeInTransaction(this.deps.db, [{ request: planned.request, cancels: planned.plan.cancels }]))[0] as TransactionResult)
        : await this.enqueue.run(planned.request);
    if (!result.claimed) {
      if (input.txn === undefined) this.deps.counters.inc(DROPPED, { reason: 'duplicate_edu' });
      // The first claim may have been lazy and its own request not answered yet; one that waited
      // for its flush needs no flush of ours (a read costs less than forcing one).
      const durable = input.txn !== undefined && (await new TxnStore(this.deps.db).committedWithFlush(input.txn));
      if (!durable) await this.lazy.makeDurable(this.lazy.mark());
      return {};
    }
    this.afterStored([planned], [result]);
    await this.dispatch(planned.plan.serverUser);
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
    const planned: PlannedSend[] = [];
    const seen = new Set<string>();
    for (const input of inputs) {
      const key = input.inboundMessage === undefined ? null : JSON.stringify([input.inboundMessage.origin, input.inboundMessage.messageId]);
      if (key !== null && seen.has(key)) {
        this.deps.counters.inc(DROPPED, { reason: 'duplicate_edu' });
        continue;
      }
      try {
        planned.push(this.planned(input));
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
    const results: readonly (EnqueueResult | TransactionResult)[] = planned.some((p) => p.plan.cancels !== null)
      ? await storeInTransaction(
          this.deps.db,
          planned.map((p) => ({ request: p.request, cancels: p.plan.cancels })),
        )
      : await this.enqueue.runAll(planned.map((p) => p.request));
    const claimed = planned.filter((_, i) => results[i]?.claimed === true);
    const duplicates = planned.length - claimed.length;
    if (duplicates > 0) this.deps.counters.inc(DROPPED, { reason: 'duplicate_edu' }, duplicates);
    this.afterStored(
      claimed,
      results.filter((r) => r.claimed),
    );
    await this.dispatch(claimed.flatMap((p) => p.plan.serverUser));
    // One group, so one statement: every result has the same mark, or none. A duplicate's first
    // claim may have been lazy too.
    const lazyMark = duplicates > 0 ? this.lazy.mark() : results[0]?.lazyMark;
    if (lazyMark !== undefined) await this.lazy.makeDurable(lazyMark);
  }

  /** The plan, and the statement's input: the plan's messages and the targets whose long-polls wait here. */
  private planned(input: SendToDeviceInput): PlannedSend {
    const plan = planSend(input, this.planContext);
    const request: EnqueueRequest = {
      txn: input.txn ?? null,
      inbound: input.inboundMessage ?? null,
      sender: input.sender,
      type: input.type,
      targets: plan.local,
      remote: plan.remote,
      appservices: plan.appservices,
      watch: this.watched(plan.local),
    };
    return { input, plan, request };
  }

  /** After the commit, for new sends only: counters, each stored device woken once, the senders told of new work. */
  private afterStored(planned: readonly PlannedSend[], results: readonly (EnqueueResult | TransactionResult)[]): void {
    const { counters, notifier } = this.deps;
    const woken = new Map<string, EnqueueResult['stored'][number]>();
    const destinations = new Set<string>();
    const appservices = new Set<string>();
    planned.forEach((p, i) => {
      const result = results[i] as EnqueueResult | TransactionResult;
      for (const [reason, n] of Object.entries(p.plan.dropped)) counters.inc(DROPPED, { reason }, n);
      counters.inc(STORED_COUNTER, {}, result.stored.length);
      const staleDropped = 'staleDropped' in result ? result.staleDropped : null;
      if ('staleCount' in result) counters.inc(STALE_DROPPED, { type: p.request.type }, result.staleCount);
      const storedPair = new Set(result.stored.map((d) => `${d.userId}\u0000${d.deviceId}`));
      for (const t of p.request.targets) {
        const pair = `${t.userId}\u0000${t.deviceId}`;
        if (t.deviceId !== '*' && !storedPair.has(pair) && staleDropped?.has(pair) !== true) {
          counters.inc(DROPPED, { reason: result.knownUsers.has(t.userId) ? 'unknown_device' : 'unknown_user' });
        }
      }
      for (const d of result.stored) {
        const key = `${d.userId}\u0000${d.deviceId}`;
        if (!woken.has(key)) woken.set(key, d);
      }
      for (const m of p.plan.remote) destinations.add(m.destination);
      for (const id of result.appservicesQueued) appservices.add(id);
    });
    for (const d of woken.values()) notifier.notify(d.userId, d.deviceId, d.news);
    // The send statement announced its own devices when it has a channel; a transaction did not.
    const announced = this.deps.wakeInStatement !== undefined && results.every((r) => !('staleCount' in r));
    if (woken.size > 0 && !announced) this.deps.publishWake?.([...woken.values()]);
    if (destinations.size > 0) this.deps.onRemoteQueued?.([...destinations]);
    if (appservices.size > 0) this.deps.onAppserviceQueued?.([...appservices]);
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

  private async dispatch(messages: ServerUserMessage[]): Promise<void> {
    if (messages.length === 0) return;
    if (this.serverUser === null) this.deps.counters.inc(DROPPED, { reason: 'no_handler' }, messages.length);
    else await this.serverUser.dispatch(messages);
  }
}

/** Rows a request may write: local targets (`*` counting one) and remote messages. */
function weightOf(q: EnqueueRequest): number {
  return Math.max(1, q.targets.length + (q.remote?.length ?? 0));
}
