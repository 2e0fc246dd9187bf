import type { KeyCounts } from '../storage/e2e-keys-store.ts';

const MAX_ENTRIES = 100_000;

/**
 * Each device's key counts, as every /sync answer carries them. Counts change only when the
 * device uploads or someone claims: each of those forgets the entry in this process, and an
 * upload (rare) also in the other processes (NOTIFY). A claim on another process is not
 * announced — a NOTIFY per claim serialised the claims on PostgreSQL's notify queue — so with
 * several processes an entry lives at most `ttlMs`: a count may lag a claim made elsewhere by
 * that long. A sync woken by a message still needs no query for them.
 */
export class KeyCountsCache {
  private readonly entries = new Map<string, { counts: KeyCounts; expires: number }>();

  constructor(private readonly ttlMs = Number.POSITIVE_INFINITY) {}
  /** Counts forgets, so a read that raced with one does not cache what it read. */
  private forgets = 0;

  private static key(userId: string, deviceId: string): string {
    return `${userId}\u0000${deviceId}`;
  }

  async get(userId: string, deviceId: string, read: () => Promise<KeyCounts>): Promise<KeyCounts> {
    const key = KeyCountsCache.key(userId, deviceId);
    const cached = this.entries.get(key);
    if (cached !== undefined && (this.ttlMs === Number.POSITIVE_INFINITY || cached.expires > Date.now())) return cached.counts;
    const before = this.forgets;
    const counts = await read();
    if (before === this.forgets) {
      if (this.entries.size >= MAX_ENTRIES) this.entries.clear();
      this.entries.set(key, { counts, expires: this.ttlMs === Number.POSITIVE_INFINITY ? 0 : Date.now() + this.ttlMs });
    }
    return counts;
  }

  forgetAll(): void {
    this.forgets++;
    this.entries.clear();
  }

  forget(devices: readonly { userId: string; deviceId: string }[]): void {
    this.forgets++;
    for (const d of devices) this.entries.delete(KeyCountsCache.key(d.userId, d.deviceId));
  }
}
