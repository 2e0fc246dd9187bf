import { and, eq, lt, or, sql, type SQL } from 'drizzle-orm';
import type { Db } from './drivers/database.ts';
import { queueLeases } from './schema.ts';

/** Leases on send queues, so that one process at a time sends each queue. */
export class QueueLeaseStore {
  constructor(private readonly db: Db) {}

  /**
   * Takes or renews the lease; false while another live holder has it. `now` comes from the
   * caller's clock, so that expiry follows a test's clock as well as the real one.
   */
  async acquire(queue: string, holder: string, ttlMs: number, now: number): Promise<boolean> {
    const rows = await this.db
      .insert(queueLeases)
      .values({ queue, holder, expiresTs: now + ttlMs })
      .onConflictDoUpdate({
        target: queueLeases.queue,
        set: { holder: sql`excluded.holder`, expiresTs: sql`excluded.expires_ts` },
        setWhere: or(eq(queueLeases.holder, holder), lt(queueLeases.expiresTs, now)) as SQL,
      })
      .returning({ holder: queueLeases.holder });
    return rows.length === 1;
  }

  async release(queue: string, holder: string): Promise<void> {
    await this.db.delete(queueLeases).where(and(eq(queueLeases.queue, queue), eq(queueLeases.holder, holder)));
  }

  /** Gives up every lease of `holder` (an instance shutting down). */
  async releaseAll(holder: string): Promise<void> {
    await this.db.delete(queueLeases).where(eq(queueLeases.holder, holder));
  }
}
