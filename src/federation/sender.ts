import { randomBytes } from 'node:crypto';
import type { Logger } from '../logger.ts';
import type { Counters } from '../services/counters.ts';
import type { Db } from '../storage/database.ts';
import { FederationOutboxStore, type PendingTxn } from '../storage/federation-outbox-store.ts';
import { packEdus } from './edu-packer.ts';
import type { FederationClient } from './federation-client.ts';

export interface SenderOptions {
  serverName: string;
  db: Db;
  client: FederationClient;
  log: Logger;
  counters: Counters;
  backoff: { initialMs: number; maxMs: number };
}

interface DestinationState {
  running: boolean;
  /** A wake-up arrived while running: look again before stopping. */
  again: boolean;
  attempts: number;
  timer: NodeJS.Timeout | null;
}

// Rows read per transaction; at most 100 EDUs of them are sent, the rest wait their turn.
const ROWS_PER_TXN = 2000;

/**
 * Sends each destination's outbox as federation transactions, one at a time per destination.
 * The transaction is persisted before it is sent, so every retry — even after a restart —
 * repeats the same txnId and body, and its rows are deleted only after the peer's 200.
 */
export class FederationSender {
  private readonly destinations = new Map<string, DestinationState>();
  private readonly store: FederationOutboxStore;
  private stopped = false;

  constructor(private readonly opts: SenderOptions) {
    this.store = new FederationOutboxStore(opts.db);
  }

  /** New messages for `destination`: send now unless it is backing off. */
  wake(destination: string): void {
    if (this.stopped) return;
    let state = this.destinations.get(destination);
    if (state === undefined) {
      state = { running: false, again: false, attempts: 0, timer: null };
      this.destinations.set(destination, state);
    }
    if (state.running) {
      state.again = true;
      return;
    }
    if (state.timer !== null) return;
    void this.run(destination, state);
  }

  /** After a start: every destination with queued or in-flight messages. */
  async resumeAll(): Promise<void> {
    for (const destination of await this.store.destinationsWithWork()) this.wake(destination);
  }

  stop(): void {
    this.stopped = true;
    for (const state of this.destinations.values()) if (state.timer !== null) clearTimeout(state.timer);
  }

  /** For tests and operators: destinations currently backing off, with their attempt counts. */
  backoffState(): Record<string, number> {
    return Object.fromEntries([...this.destinations].filter(([, s]) => s.timer !== null).map(([d, s]) => [d, s.attempts]));
  }

  private async run(destination: string, state: DestinationState): Promise<void> {
    state.running = true;
    try {
      do {
        state.again = false;
        while (!this.stopped && (await this.sendOne(destination))) {
          state.attempts = 0;
        }
      } while (state.again && !this.stopped);
      state.attempts = 0;
    } catch (e) {
      state.attempts += 1;
      const { initialMs, maxMs } = this.opts.backoff;
      const base = Math.min(maxMs, initialMs * 2 ** Math.min(state.attempts - 1, 30));
      // Full jitter in [base/2, base]: peers that failed together do not retry together.
      const delay = Math.round(base / 2 + Math.random() * (base / 2));
      this.opts.counters.inc('federation_send_failures_total', { destination });
      this.opts.log.warn('federation send failed; backing off', { destination, attempts: state.attempts, delayMs: delay, err: String(e) });
      state.timer = setTimeout(() => {
        state.timer = null;
        if (!this.stopped) void this.run(destination, state);
      }, delay);
      state.timer.unref();
    } finally {
      state.running = false;
    }
  }

  /** Sends one transaction; false when the destination's queue is empty. */
  private async sendOne(destination: string): Promise<boolean> {
    let txn: PendingTxn | null = await this.store.getPendingTxn(destination);
    if (txn === null) {
      const rows = await this.store.oldestForDestination(destination, ROWS_PER_TXN);
      if (rows.length === 0) return false;
      const packed = packEdus(rows);
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
