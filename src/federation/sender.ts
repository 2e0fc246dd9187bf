import { randomBytes } from 'node:crypto';
import type { Logger } from '../logger.ts';
import type { Clock } from '../sdk/clock.ts';
import type { Counters } from '../metrics/counters.ts';
import type { Db } from '../storage/drivers/database.ts';
import { queueLease } from '../runtime/queue-lease.ts';
import { RetryingRunner } from '../runtime/retrying-runner.ts';
import { systemClock } from '../server-user/system-clock.ts';
import { FederationOutboxStore, type PendingTxn } from '../storage/federation-outbox-store.ts';
import { packEdus } from './edu-packer.ts';
import type { FederationClient } from './federation-client.ts';
import type { ReceiverOrder } from './receiver-order.ts';

export interface SenderOptions {
  serverName: string;
  db: Db;
  client: FederationClient;
  /** Whether a destination applies EDUs in order, which decides how its transactions are packed. */
  receiverOrder: Pick<ReceiverOrder, 'appliesEdusInOrder'>;
  log: Logger;
  counters: Counters;
  /** Holder name for this instance's queue leases. */
  instanceId: string;
  backoff: { initialMs: number; maxMs: number };
  /** Times backoffs and queue leases; the system clock by default. */
  clock?: Clock;
  /** Destinations sent to at once. */
  maxConcurrent: number;
}

// Rows read per transaction; what fits into 100 EDUs (and the receiver's order rule) is sent,
// the rest wait their turn.
const ROWS_PER_TXN = 2000;

/**
 * Sends each destination's outbox as federation transactions, one at a time per destination.
 * The transaction is persisted before it is sent, so every retry — even after a restart —
 * repeats the same txnId and body, and its rows are deleted only after the peer's 200.
 */
export class FederationSender {
  private readonly store: FederationOutboxStore;
  private readonly runner: RetryingRunner;

  constructor(private readonly opts: SenderOptions) {
    this.store = new FederationOutboxStore(opts.db);
    this.runner = new RetryingRunner({
      step: (destination) => this.sendOne(destination),
      // A destination that does not answer at all backs off here, before its lease and queue
      // are read: thousands of dead servers cost no database work. (The answer is cached.)
      precheck: async (destination) => void (await opts.receiverOrder.appliesEdusInOrder(destination)),
      backoff: opts.backoff,
      maxConcurrent: opts.maxConcurrent,
      log: opts.log.child({ component: 'federation-sender' }),
      lease: queueLease(opts.db, 'federation', opts.instanceId, opts.clock ?? systemClock),
      clock: opts.clock ?? systemClock,
      onFailure: (destination) => opts.counters.inc('federation_send_failures_total', { destination }),
    });
  }

  /** New messages for `destination`: send now unless it is backing off. */
  wake(destination: string): void {
    this.runner.wake(destination);
  }

  /** After a start: every destination with queued or in-flight messages. */
  async resumeAll(): Promise<void> {
    for (const destination of await this.store.destinationsWithWork()) this.wake(destination);
  }

  stop(): Promise<void> {
    return this.runner.stop();
  }

  /** Sends one transaction; false when the destination's queue is empty. */
  private async sendOne(destination: string): Promise<boolean> {
    // Both reads at once (one round trip less before the send); the rows only matter when no
    // transaction is pending, which is the usual case.
    const [pending, rows] = await Promise.all([this.store.getPendingTxn(destination), this.store.oldestForDestination(destination, ROWS_PER_TXN)]);
    let txn: PendingTxn | null = pending;
    if (txn === null) {
      if (rows.length === 0) return false;
      const packed = packEdus(rows, { receiverAppliesInOrder: await this.opts.receiverOrder.appliesEdusInOrder(destination) });
      const body = { origin: this.opts.serverName, origin_server_ts: Date.now(), pdus: [], edus: packed.edus };
      txn = { destination, txnId: `${Date.now()}${randomBytes(6).toString('hex')}`, body: JSON.stringify(body), streamIds: packed.streamIds };
      await this.store.putPendingTxn(txn);
    }
    const res = await this.opts.client.request(destination, 'PUT', `/_matrix/federation/v1/send/${encodeURIComponent(txn.txnId)}`, JSON.parse(txn.body));
    if (res.status !== 200) throw new Error(`${destination} answered ${res.status}: ${JSON.stringify(res.json).slice(0, 200)}`);
    await this.store.completePendingTxn(txn);
    this.opts.counters.inc('federation_transactions_sent_total', { destination });
    this.opts.counters.inc('federation_messages_sent_total', { destination }, txn.streamIds.length);
    return true;
  }
}
