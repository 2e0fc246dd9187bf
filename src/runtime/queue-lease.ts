import { randomBytes } from 'node:crypto';
import type { Clock } from '../sdk/clock.ts';
import type { Db } from '../storage/drivers/database.ts';
import type { TaskLeases } from '../server-user/periodic-tasks.ts';
import { QueueLeaseStore } from '../storage/queue-lease-store.ts';

/** A name for one server instance (one createApp): the holder of its leases, the source of its NOTIFYs. */
export function newInstanceId(): string {
  return `${process.pid}-${randomBytes(6).toString('hex')}`;
}

// Longer than one send step (HTTP timeout 30 s) plus RENEW_AFTER_MS, so a live holder always
// renews in time: a step starts with the lease at most RENEW_AFTER_MS old.
const LEASE_TTL_MS = 45_000;
const RENEW_AFTER_MS = 5_000;

/**
 * Instances shutting down, by holder name: `stopping` takes or renews no lease any more;
 * `released` has given all of them up, so a late release (a send step that was in flight when
 * the senders stopped, finishing after the pool closed) has nothing to do and does no I/O.
 * Without this, such a step renewed the lease its runner had just released, and the closed pool
 * then failed its release ("releasing a queue lease failed"): the queue stayed taken until the
 * lease expired, 45 s later.
 */
const shuttingDown = new Map<string, 'stopping' | 'released'>();

/** Leases for a RetryingRunner, namespaced so federation and appservice keys cannot collide. */
export function queueLease(db: Db, namespace: string, holder: string, clock: Clock, retryMs = 1_000) {
  const store = new QueueLeaseStore(db);
  return {
    // Expiry on the injected clock, the one the runner times its lease retries and renewals with.
    acquire: async (key: string) => shuttingDown.get(holder) === undefined && store.acquire(`${namespace}:${key}`, holder, LEASE_TTL_MS, clock.now()),
    release: async (key: string) => {
      if (shuttingDown.get(holder) !== 'released') await store.release(`${namespace}:${key}`, holder);
    },
    retryMs,
    renewAfterMs: RENEW_AFTER_MS,
  };
}

/**
 * Shutdown, step 1 (before the senders stop): from now on `holder` takes and renews no lease,
 * so no step still in flight can take back a queue its runner gives up.
 */
export function stopTakingLeases(holder: string): void {
  shuttingDown.set(holder, 'stopping');
}

/**
 * Shutdown, step 2 (after the senders stopped, before the database closes): gives up every
 * lease `holder` still has, so another process takes its queues at once.
 */
export async function releaseAllLeases(db: Db, holder: string): Promise<void> {
  await new QueueLeaseStore(db).releaseAll(holder);
  shuttingDown.set(holder, 'released');
}

/**
 * Leases for handler modules' `deployment` periodic tasks, in the same table and under the same
 * shutdown rules as the queues' (a process shutting down takes none).
 */
export function taskLeases(db: Db, holder: string): TaskLeases {
  const store = new QueueLeaseStore(db);
  return {
    acquire: async (key, ttlMs, now) => shuttingDown.get(holder) === undefined && store.acquire(key, holder, ttlMs, now),
    release: async (key) => {
      if (shuttingDown.get(holder) !== 'released') await store.release(key, holder);
    },
  };
}
