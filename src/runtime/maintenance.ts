import type { Config } from '../config/config.ts';
import type { Logger } from '../logger.ts';
import type { Clock } from '../sdk/clock.ts';
import { systemClock } from '../server-user/system-clock.ts';
import type { Db } from '../storage/drivers/database.ts';
import { DeviceInboxStore } from '../storage/device-inbox-store.ts';
import { vacuumWhereDue } from '../storage/drivers/pglite-vacuum.ts';
import { FederationInboundStore } from '../storage/federation-inbound-store.ts';
import { FederationOutboxStore } from '../storage/federation-outbox-store.ts';
import type { Counters } from '../metrics/counters.ts';
import { REQUEST_READ_RETENTION_DAYS } from '../services/stale-requests.ts';
import { TxnStore } from '../storage/txn-store.ts';
import { UiaStore } from '../storage/uia-store.ts';

const HOUR = 60 * 60 * 1000;
/** How often PGlite's tables are checked for a due VACUUM: autovacuum's own naptime. */
export const PGLITE_VACUUM_INTERVAL_MS = 60_000;

/** Periodic clean-up of rows whose purpose has expired. */
export class Maintenance {
  private cancel: (() => void) | null = null;
  private cancelVacuum: (() => void) | null = null;
  private stopped = false;
  private running: Promise<void> = Promise.resolve();
  private vacuuming: Promise<void> = Promise.resolve();

  /** `vacuum`: PGlite's stand-in for autovacuum (see pglite-vacuum.ts), which PostgreSQL does itself. */
  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly log: Logger,
    private readonly counters: Counters,
    private readonly clock: Clock = systemClock,
    private readonly vacuum = false,
  ) {}

  /** PGlite: VACUUM (ANALYZE) the tables autovacuum's rule finds due; nothing elsewhere. */
  async vacuumOnce(): Promise<{ table: string; dead: number }[]> {
    if (!this.vacuum) return [];
    const done = await vacuumWhereDue(this.db);
    if (done.length > 0) this.log.debug('vacuumed', { tables: done });
    return done;
  }

  async runOnce(now = this.clock.now()): Promise<{ txnIds: number; inboundEdus: number; queueCap: number; ttl: number; federationQueueCap: number }> {
    const txnIds = await new TxnStore(this.db).deleteOlderThan(now - this.config.limits.txnRetentionHours * HOUR);
    await new UiaStore(this.db).deleteOlderThan(now - HOUR);
    const inboundEdus = await new FederationInboundStore(this.db).deleteOlderThan(now - this.config.federation.inboundDedupeDays * 24 * HOUR);
    const inbox = new DeviceInboxStore(this.db);
    const { deviceQueueMax, toDeviceTtlHours } = this.config.limits;
    const ttl = toDeviceTtlHours > 0 ? await inbox.deleteReceivedBefore(now - toDeviceTtlHours * HOUR) : 0;
    const queueCap = await inbox.trimQueuesOver(deviceQueueMax);
    await inbox.deleteRequestReadsBefore(now - REQUEST_READ_RETENTION_DAYS * 24 * HOUR);
    this.counters.inc('to_device_dropped_total', { reason: 'ttl' }, ttl);
    this.counters.inc('to_device_dropped_total', { reason: 'queue_cap' }, queueCap);
    const federationQueueCap = await new FederationOutboxStore(this.db).trimDestinationsOver(this.config.federation.destinationQueueMax);
    this.counters.inc('to_device_dropped_total', { reason: 'federation_queue_cap' }, federationQueueCap);
    if (ttl + queueCap + federationQueueCap > 0) this.log.warn('dropped undelivered to-device messages', { ttl, queueCap, federationQueueCap });
    return { txnIds, inboundEdus, queueCap, ttl, federationQueueCap };
  }

  /**
   * Runs now, then `intervalMs` after each run has finished: a slow run (a large backlog on a
   * loaded database) is never overlapped by the next.
   */
  start(intervalMs = this.config.limits.maintenanceIntervalS * 1000): void {
    this.stopped = false;
    const run = async (): Promise<void> => {
      await this.runOnce().catch((e: unknown) => this.log.warn('maintenance failed', { err: String(e) }));
      if (!this.stopped) this.cancel = this.clock.setTimeout(() => (this.running = run()), intervalMs);
    };
    this.running = run();
    if (this.vacuum) {
      const vacuum = async (): Promise<void> => {
        await this.vacuumOnce().catch((e: unknown) => this.log.warn('vacuum failed', { err: String(e) }));
        if (!this.stopped) this.cancelVacuum = this.clock.setTimeout(() => (this.vacuuming = vacuum()), PGLITE_VACUUM_INTERVAL_MS);
      };
      this.cancelVacuum = this.clock.setTimeout(() => (this.vacuuming = vacuum()), PGLITE_VACUUM_INTERVAL_MS);
    }
  }

  /** Resolves when the runs in progress (if any) have finished: for a test that moved the clock. */
  async idle(): Promise<void> {
    await Promise.all([this.running, this.vacuuming]);
  }

  stop(): void {
    this.stopped = true;
    this.cancel?.();
    this.cancel = null;
    this.cancelVacuum?.();
    this.cancelVacuum = null;
  }
}
