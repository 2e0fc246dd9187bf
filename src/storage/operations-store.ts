import { and, asc, count, desc, eq, min, sql } from 'drizzle-orm';
import type { Db } from './drivers/database.ts';
import { appservicePendingTxns, appserviceQueue, deviceInbox, devices, federationOutbox, federationPendingTxns, queueLeases } from './schema.ts';

export interface QueueState {
  /** The destination (federation) or appservice id. */
  key: string;
  queued: number;
  oldestQueuedTs: number | null;
  /** The transaction being sent (retried with the same id until acknowledged), if any. */
  pendingTxn: { txnId: string; createdTs: number; messages: number } | null;
  /** The process sending this queue now, if any (see queue_leases). */
  lease: { holder: string; expiresTs: number } | null;
}

/**
 * Read-only queries for operators: metrics gauges computed at scrape time, the admin CLI and
 * the readiness check. Nothing here writes.
 */
export class OperationsStore {
  constructor(private readonly db: Db) {}

  /**
   * Answers when the database does (readiness): true when it is a standby (in recovery), which
   * serves reads but fails every write; after a failover the old connection target may be one.
   */
  async inRecovery(): Promise<boolean> {
    const result: unknown = await this.db.execute(sql`select pg_is_in_recovery() as recovering`);
    const rows = Array.isArray(result) ? result : (result as { rows: unknown[] }).rows;
    return (rows[0] as { recovering: boolean } | undefined)?.recovering === true;
  }

  /** Messages waiting in device queues, over all devices. */
  async deviceQueueTotal(): Promise<number> {
    const [row] = await this.db.select({ n: count() }).from(deviceInbox);
    return Number(row?.n ?? 0);
  }

  /** The `limit` longest device queues, longest first. */
  async largestDeviceQueues(limit: number): Promise<{ userId: string; deviceId: string; depth: number }[]> {
    const n = count();
    const rows = await this.db
      .select({ userId: deviceInbox.userId, deviceId: deviceInbox.deviceId, depth: n })
      .from(deviceInbox)
      .groupBy(deviceInbox.userId, deviceInbox.deviceId)
      .orderBy(desc(n), asc(deviceInbox.userId), asc(deviceInbox.deviceId))
      .limit(limit);
    return rows.map((r) => ({ ...r, depth: Number(r.depth) }));
  }

  /** A user's devices with the number of messages waiting for each. */
  async devicesWithQueueDepth(userId: string): Promise<{ deviceId: string; displayName: string | null; lastSeenTs: number | null; queued: number }[]> {
    const rows = await this.db
      .select({ deviceId: devices.deviceId, displayName: devices.displayName, lastSeenTs: devices.lastSeenTs, queued: count(deviceInbox.streamId) })
      .from(devices)
      .leftJoin(deviceInbox, and(eq(deviceInbox.userId, devices.userId), eq(deviceInbox.deviceId, devices.deviceId)))
      .where(eq(devices.userId, userId))
      .groupBy(devices.userId, devices.deviceId, devices.displayName, devices.lastSeenTs)
      .orderBy(asc(devices.deviceId));
    return rows.map((r) => ({ ...r, queued: Number(r.queued) }));
  }

  /** Messages waiting per federation destination. */
  async federationQueueDepths(): Promise<Map<string, number>> {
    const rows = await this.db.select({ key: federationOutbox.destination, n: count() }).from(federationOutbox).groupBy(federationOutbox.destination);
    return new Map(rows.map((r) => [r.key, Number(r.n)]));
  }

  /** Messages waiting per appservice. */
  async appserviceQueueDepths(): Promise<Map<string, number>> {
    const rows = await this.db.select({ key: appserviceQueue.appserviceId, n: count() }).from(appserviceQueue).groupBy(appserviceQueue.appserviceId);
    return new Map(rows.map((r) => [r.key, Number(r.n)]));
  }

  /** Every federation destination with queued messages, a pending transaction or a lease. */
  async federationQueues(): Promise<QueueState[]> {
    const queued = await this.db
      .select({ key: federationOutbox.destination, n: count(), oldest: min(federationOutbox.createdTs) })
      .from(federationOutbox)
      .groupBy(federationOutbox.destination);
    const pending = await this.db
      .select({ key: federationPendingTxns.destination, txnId: federationPendingTxns.txnId, createdTs: federationPendingTxns.createdTs, ids: federationPendingTxns.streamIds })
      .from(federationPendingTxns);
    return this.merge('federation', queued, pending);
  }

  /** Every appservice with queued messages, a pending transaction or a lease. */
  async appserviceQueues(): Promise<QueueState[]> {
    const queued = await this.db
      .select({ key: appserviceQueue.appserviceId, n: count(), oldest: min(appserviceQueue.createdTs) })
      .from(appserviceQueue)
      .groupBy(appserviceQueue.appserviceId);
    const pending = await this.db
      .select({ key: appservicePendingTxns.appserviceId, txnId: appservicePendingTxns.txnId, createdTs: appservicePendingTxns.createdTs, ids: appservicePendingTxns.queueIds })
      .from(appservicePendingTxns);
    return this.merge('appservice', queued, pending);
  }

  private async merge(
    namespace: string,
    queued: { key: string; n: number; oldest: number | null }[],
    pending: { key: string; txnId: string; createdTs: number; ids: string }[],
  ): Promise<QueueState[]> {
    // Lease rows are named `<namespace>:<key>` (runtime/queue-lease.ts).
    const prefix = `${namespace}:`;
    const leases = await this.db
      .select({ queue: queueLeases.queue, holder: queueLeases.holder, expiresTs: queueLeases.expiresTs })
      .from(queueLeases)
      .where(and(sql`${queueLeases.queue} like ${`${prefix}%`}`, sql`${queueLeases.expiresTs} > ${Date.now()}`));
    const states = new Map<string, QueueState>();
    const state = (key: string): QueueState => {
      let s = states.get(key);
      if (s === undefined) states.set(key, (s = { key, queued: 0, oldestQueuedTs: null, pendingTxn: null, lease: null }));
      return s;
    };
    for (const q of queued) Object.assign(state(q.key), { queued: Number(q.n), oldestQueuedTs: q.oldest === null ? null : Number(q.oldest) });
    for (const p of pending) state(p.key).pendingTxn = { txnId: p.txnId, createdTs: Number(p.createdTs), messages: countIds(p.ids) };
    for (const l of leases) state(l.queue.slice(prefix.length)).lease = { holder: l.holder, expiresTs: Number(l.expiresTs) };
    return [...states.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }
}

function countIds(json: string): number {
  try {
    const ids: unknown = JSON.parse(json);
    return Array.isArray(ids) ? ids.length : 0;
  } catch {
    return 0;
  }
}
