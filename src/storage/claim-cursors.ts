const MAX_ENTRIES = 10_000;

/**
 * Where this process's next claim of a device's one-time keys starts looking: just past the key
 * it handed out last (per user, device and algorithm).
 *
 * Why: a claim deletes its key, and a deleted row's index entry stays in the primary key's index
 * until VACUUM, which runs only after thousands of deletes. A claim that always looked for the
 * lowest key id would walk every entry claimed since then, a little more each claim: 456 index
 * pages (1.8 ms) per claim after 55,000 claims of one device. Starting past the last key handed
 * out skips them.
 *
 * Only a hint: it never decides who gets a key (the claim's `for update skip locked` and delete
 * do), so other processes' claims, a stale entry or a forgotten one cost a longer scan at worst.
 * A claim that finds nothing past it looks again from the lowest key id, so keys uploaded with
 * lower ids, or skipped while a concurrent claim held them, still go out.
 */
export class ClaimCursors {
  private readonly after = new Map<string, string>();

  private static key(userId: string, deviceId: string, algorithm: string): string {
    return `${userId}\u0000${deviceId}\u0000${algorithm}`;
  }

  /** The key id to look past, or null to start from the lowest. */
  get(userId: string, deviceId: string, algorithm: string): string | null {
    return this.after.get(ClaimCursors.key(userId, deviceId, algorithm)) ?? null;
  }

  /**
   * After a claim of one device's keys (`claimed`: its one-time keys in key-id order, then its
   * fallback key if it gave that): the cursor moves to the last one-time key, or is forgotten if
   * there was none (the device has none left).
   */
  moved(userId: string, deviceId: string, algorithm: string, claimed: readonly { keyId: string; fallback: boolean }[]): void {
    const key = ClaimCursors.key(userId, deviceId, algorithm);
    const last = claimed.filter((k) => !k.fallback).at(-1);
    if (last === undefined) {
      this.after.delete(key);
      return;
    }
    // Forgetting everything costs each device one scan from the start: cheaper than tracking age.
    if (this.after.size >= MAX_ENTRIES && !this.after.has(key)) this.after.clear();
    this.after.set(key, last.keyId);
  }
}
