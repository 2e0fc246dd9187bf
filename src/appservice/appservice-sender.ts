import { randomBytes } from 'node:crypto';
import type { Logger } from '../logger.ts';
import type { Counters } from '../services/counters.ts';
import { queueLease } from '../services/queue-lease.ts';
import { RetryingRunner } from '../services/retrying-runner.ts';
import { AppserviceQueueStore, type AppservicePendingTxn } from '../storage/appservice-queue-store.ts';
import type { Db } from '../storage/database.ts';
import { AppserviceClient } from './appservice-client.ts';
import type { AppserviceRegistry } from './registration.ts';

export const MAX_TO_DEVICE_PER_TXN = 100;

export interface AppserviceSenderOptions {
  db: Db;
  registry: AppserviceRegistry;
  log: Logger;
  counters: Counters;
  /** Holder name for this instance's queue leases. */
  instanceId: string;
  backoff: { initialMs: number; maxMs: number };
  /** The HTTP transport; app.ts passes a timed one. */
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

  constructor(private readonly opts: AppserviceSenderOptions) {
    this.store = new AppserviceQueueStore(opts.db);
    this.client = opts.client ?? new AppserviceClient();
    this.runner = new RetryingRunner({
      step: (id) => this.sendOne(id),
      backoff: opts.backoff,
      // Appservices are few and configured; this only bounds a misconfiguration.
      maxConcurrent: 16,
      log: opts.log.child({ component: 'appservice-sender' }),
      lease: queueLease(opts.db, 'appservice', opts.instanceId),
      onFailure: (id) => opts.counters.inc('appservice_send_failures_total', { appservice: id }),
    });
  }

  wake(appserviceId: string): void {
    this.runner.wake(appserviceId);
  }

  async resumeAll(): Promise<void> {
    for (const id of await this.store.appservicesWithWork()) this.wake(id);
  }

  stop(): Promise<void> {
    return this.runner.stop();
  }

  private async sendOne(appserviceId: string): Promise<boolean> {
    const as = this.opts.registry.all.find((a) => a.id === appserviceId);
    if (as === undefined || as.url === null) return false;
    let txn: AppservicePendingTxn | null = await this.store.getPendingTxn(appserviceId);
    if (txn === null) {
      const rows = await this.store.oldest(appserviceId, MAX_TO_DEVICE_PER_TXN);
      if (rows.length === 0) return false;
      const toDevice = rows.map((r) => ({
        type: r.type,
        sender: r.sender,
        content: JSON.parse(r.content) as Record<string, unknown>,
        to_user_id: r.toUserId,
        to_device_id: r.toDeviceId,
      }));
      // The stable key (MSC4203) and the one Synapse sends and matrix-bot-sdk reads.
      const body = { events: [], to_device: toDevice, 'de.sorunome.msc2409.to_device': toDevice };
      txn = {
        appserviceId,
        txnId: `${Date.now()}${randomBytes(6).toString('hex')}`,
        body: JSON.stringify(body),
        queueIds: rows.map((r) => r.streamId),
        inboxIds: rows.flatMap((r) => (r.exclusive && r.inboxStreamId !== null ? [r.inboxStreamId] : [])),
      };
      await this.store.putPendingTxn(txn);
    }
    const status = await this.client.putTransaction({ id: as.id, url: as.url, hsToken: as.hsToken }, txn.txnId, txn.body);
    if (status < 200 || status >= 300) throw new Error(`appservice ${appserviceId} answered ${status}`);
    await this.store.completePendingTxn(txn);
    this.opts.counters.inc('appservice_transactions_sent_total', { appservice: appserviceId });
    this.opts.counters.inc('appservice_messages_sent_total', { appservice: appserviceId }, txn.queueIds.length);
    return true;
  }
}
