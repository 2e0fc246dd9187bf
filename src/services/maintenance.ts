import type { Config } from '../config/config.ts';
import type { Logger } from '../logger.ts';
import type { Db } from '../storage/database.ts';
import { FederationInboundStore } from '../storage/federation-inbound-store.ts';
import { TxnStore } from '../storage/txn-store.ts';
import { UiaStore } from '../storage/uia-store.ts';

const HOUR = 60 * 60 * 1000;

/** Periodic clean-up of rows whose purpose has expired. */
export class Maintenance {
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly log: Logger,
  ) {}

  async runOnce(now = Date.now()): Promise<{ txnIds: number; inboundEdus: number }> {
    const txnIds = await new TxnStore(this.db).deleteOlderThan(now - this.config.limits.txnRetentionHours * HOUR);
    await new UiaStore(this.db).deleteOlderThan(now - HOUR);
    const inboundEdus = await new FederationInboundStore(this.db).deleteOlderThan(now - this.config.federation.inboundDedupeDays * 24 * HOUR);
    return { txnIds, inboundEdus };
  }

  start(intervalMs = HOUR): void {
    const run = () =>
      this.runOnce().catch((e: unknown) => this.log.warn('maintenance failed', { err: String(e) }));
    void run();
    this.timer = setInterval(run, intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}
