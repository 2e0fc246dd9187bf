import type { KeyCounts } from '../storage/e2e-keys-store.ts';

const MAX_ENTRIES = 100_000;

/**
 * Each device's key counts, as every /sync answer carries them. Counts change only when the
 * device uploads or someone claims, and each of those forgets the entry here and (through
 * NOTIFY) in the other processes; so a sync woken by a message needs no query for them.
 */
export class KeyCountsCache {
  private readonly entries = new Map<string, KeyCounts>();
  /** Counts forgets, so a read that raced with one does not cache what it read. */
  private forgets = 0;

  private static key(userId: string, deviceId: string): string {
    return `${userId}\u0000${deviceId}`;
  }

  async get(userId: string, deviceId: string, read: () => Promise<KeyCounts>): Promise<KeyCounts> {
    const key = KeyCountsCache.key(userId, deviceId);
    const cached = this.entries.get(key);
    if (cached !== undefined) return cached;
    const before = this.forgets;
    const counts = await read();
    if (before === this.forgets) {
      if (this.entries.size >= MAX_ENTRIES) this.entries.clear();
      this.entries.set(key, counts);
    }
    return counts;
  }

  forget(devices: readonly { userId: string; deviceId: string }[]): void {
    this.forgets++;
    for (const d of devices) this.entries.delete(KeyCountsCache.key(d.userId, d.deviceId));
  }
}
