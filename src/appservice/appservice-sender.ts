import { randomBytes } from 'node:crypto';
import type { Logger } from '../logger.ts';
import type { Clock } from '../sdk/clock.ts';
import type { Counters } from '../metrics/counters.ts';
import { queueLease } from '../runtime/queue-lease.ts';
import { RetryingRunner } from '../runtime/retrying-runner.ts';
import { systemClock } from '../server-user/system-clock.ts';
import { AppserviceQueueStore } from '../storage/appservice-queue-store.ts';
import type { Db } from '../storage/drivers/database.ts';
import { AppserviceClient } from './appservice-client.ts';
import type { AppserviceRegistry } from './registration.ts';

export const MAX_TO_DEVICE_PER_TXN = 100;
/**
 * After a transaction that was not full, the next starts no sooner than this after it. Without
 * it a busy stream goes out as one small transaction per step: measured in the S7 bench, 1,430
 * transactions of 14 messages for 20,000 messages, the sender's HTTP and statements taking a
 * third of what the server could accept. At 10 ms, transactions under S7's stream were still far
 * from full, and in S7 subset runs the server accepted sends faster at 30. Only a busy stream
 * waits: a message after a quiet spell goes at once, and so does a full transaction (a backlog).
 */
export const LINGER_MS = 30;

export interface AppserviceSenderOptions {
  db: Db;
  registry: AppserviceRegistry;
  log: Logger;
  counters: Counters;
  /** Holder name for this instance's queue leases. */
  instanceId: string;
  backoff: { initialMs: number; maxMs: number };
  /** Times backoffs and queue leases; the system clock by default. */
  clock?: Clock;
  /** The HTTP transport; app.ts passes a timed one. The sender closes it when it stops. */
  client?: AppserviceClient;
}

/**
 * Pushes each appservice's queue as `PUT {url}/_matrix/app/v1/transactions/{txnId}`, at most
 * 100 to-device items per transaction. The transaction is persisted first, so a retry — even
 * after a restart — repeats the same txnId and body (Synapse rebuilds it and loses to-device
 * messages, #14710); rows are deleted only after a 2xx.
 */
export class AppserviceSender {
  private readonly store: AppserviceQueueStore;
  private readonly runner: RetryingRunner;
  private readonly client: AppserviceClient;
  /** Per appservice: the transaction answered 2xx whose rows the next step deletes. */
  private readonly acknowledged = new Map<string, string>();
  /** Per appservice: when its last transaction that was not full was sent. */
  private readonly lastPartial = new Map<string, number>();

  constructor(private readonly opts: AppserviceSenderOptions) {
    this.store = new AppserviceQueueStore(opts.db);
    this.client = opts.client ?? new AppserviceClient();
    this.runner = new RetryingRunner({
      step: (id) => this.sendOne(id),
      backoff: opts.backoff,
      // Appservices are few and configured; this only bounds a misconfiguration.
      maxConcurrent: 16,
      log: opts.log.child({ component: 'appservice-sender' }),
      lease: queueLease(opts.db, 'appservice', opts.instanceId, opts.clock ?? systemClock),
      clock: opts.clock ?? systemClock,
      onFailure: (id) => opts.counters.inc('appservice_send_failures_total', { appservice: id }),
    });
  }

  wake(appserviceId: string): void {
    this.runner.wake(appserviceId);
  }

  async resumeAll(): Promise<void> {
    for (const id of await this.store.appservicesWithWork()) this.wake(id);
  }

  /**
   * Stops sending; what was acknowledged but not yet completed is completed, so a restart does not
   * repeat it. The client (given or its own) is closed: the sender owns it.
   */
  async stop(): Promise<void> {
    await this.runner.stop();
    const acknowledged = [...this.acknowledged];
    this.acknowledged.clear();
    for (const [appserviceId, txnId] of acknowledged) {
      await this.store.completePendingTxn(appserviceId, txnId).catch((e: unknown) => this.opts.log.warn('completing an appservice transaction at shutdown failed', { appserviceId, err: String(e) }));
    }
    this.client.close();
  }

  private async sendOne(appserviceId: string): Promise<boolean> {
    const as = this.opts.registry.all.find((a) => a.id === appserviceId);
    if (as === undefined || as.url === null) return false;
    const partialAt = this.lastPartial.get(appserviceId);
    if (partialAt !== undefined) {
      this.lastPartial.delete(appserviceId);
      const wait = partialAt + LINGER_MS - Date.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait).unref());
    }
    // The last step's acknowledged transaction is completed by this step's statement: one
    // statement per transaction, not three. Until then it stays stored; if this process
    // crashes first, the next holder repeats it under the same txnId, which the appservice deduplicates.
    const acknowledged = this.acknowledged.get(appserviceId) ?? null;
    const txn = await this.store.advance(appserviceId, acknowledged, `${Date.now()}${randomBytes(6).toString('hex')}`, MAX_TO_DEVICE_PER_TXN);
    this.acknowledged.delete(appserviceId);
    if (txn === null) return false;
    const sentAt = Date.now();
    const status = await this.client.putTransaction({ id: as.id, url: as.url, hsToken: as.hsToken }, txn.txnId, txn.body);
    if (status < 200 || status >= 300) throw new Error(`appservice ${appserviceId} answered ${status}`);
    this.acknowledged.set(appserviceId, txn.txnId);
    if (txn.queueIds.length < MAX_TO_DEVICE_PER_TXN) this.lastPartial.set(appserviceId, sentAt);
    this.opts.counters.inc('appservice_transactions_sent_total', { appservice: appserviceId });
    this.opts.counters.inc('appservice_messages_sent_total', { appservice: appserviceId }, txn.queueIds.length);
    return true;
  }
}
