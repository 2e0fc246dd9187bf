import { randomBytes } from 'node:crypto';
import type { Db } from '../storage/database.ts';
import { QueueLeaseStore } from '../storage/queue-lease-store.ts';

/** A name for one server instance (one createApp): the holder of its leases, the source of its NOTIFYs. */
export function newInstanceId(): string {
  return `${process.pid}-${randomBytes(6).toString('hex')}`;
}

// Longer than one send step (HTTP timeout 30 s) so a live holder always renews in time.
const LEASE_TTL_MS = 45_000;

/** Leases for a RetryingRunner, namespaced so federation and appservice keys cannot collide. */
export function queueLease(db: Db, namespace: string, holder: string, retryMs = 1_000) {
  const store = new QueueLeaseStore(db);
  return {
    acquire: (key: string) => store.acquire(`${namespace}:${key}`, holder, LEASE_TTL_MS),
    release: (key: string) => store.release(`${namespace}:${key}`, holder),
    retryMs,
  };
}
