/**
 * Wakes long-polling `/sync` requests of one device when a message for that device is stored.
 * In-process only; several processes are joined through PostgreSQL LISTEN/NOTIFY on top of this.
 */
export class Notifier {
  private readonly listeners = new Map<string, Set<() => void>>();
  private closed = false;

  private static key(userId: string, deviceId: string): string {
    return `${userId}\u0000${deviceId}`;
  }

  /** Registers a one-shot wake-up; returns the function that cancels it. */
  subscribe(userId: string, deviceId: string, onWake: () => void): () => void {
    if (this.closed) {
      queueMicrotask(onWake);
      return () => {};
    }
    const key = Notifier.key(userId, deviceId);
    let set = this.listeners.get(key);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(key, set);
    }
    set.add(onWake);
    return () => {
      const current = this.listeners.get(key);
      if (current === undefined) return;
      current.delete(onWake);
      if (current.size === 0) this.listeners.delete(key);
    };
  }

  notify(userId: string, deviceId: string): void {
    const key = Notifier.key(userId, deviceId);
    const set = this.listeners.get(key);
    if (set === undefined) return;
    this.listeners.delete(key);
    for (const wake of set) wake();
  }

  /** Ends every long-poll now and any later one at once (graceful shutdown: they answer instead of holding the server). */
  wakeAll(): void {
    this.closed = true;
    const all = [...this.listeners.values()];
    this.listeners.clear();
    for (const set of all) for (const wake of set) wake();
  }

  /** Long-polls in flight, for metrics and tests. */
  get waiting(): number {
    let n = 0;
    for (const set of this.listeners.values()) n += set.size;
    return n;
  }
}
