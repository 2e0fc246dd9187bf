/**
 * Wakes long-polling `/sync` requests of one device when a message for that device is stored.
 * In-process only; several processes are joined through PostgreSQL LISTEN/NOTIFY on top of this.
 *
 * A server may hold tens of thousands of parked long-polls, so a subscription allocates nothing
 * of its own: the caller's wake-up function is stored as it is (alone, or in a Set once a device
 * has several polls) and removed by identity, rather than wrapped or paired with a cancel closure.
 */
export class Notifier {
  private readonly listeners = new Map<string, (() => void) | Set<() => void>>();
  private closed = false;

  private static key(userId: string, deviceId: string): string {
    return `${userId}\u0000${deviceId}`;
  }

  /** Registers a one-shot wake-up, until it is called or `unsubscribe` is called with it. */
  subscribe(userId: string, deviceId: string, onWake: () => void): void {
    if (this.closed) {
      queueMicrotask(() => this.wake(onWake));
      return;
    }
    const key = Notifier.key(userId, deviceId);
    const current = this.listeners.get(key);
    if (current === undefined) this.listeners.set(key, onWake);
    else if (current instanceof Set) current.add(onWake);
    else this.listeners.set(key, new Set([current, onWake]));
  }

  /** Cancels a wake-up registered with `subscribe`; harmless once it has been called. */
  unsubscribe(userId: string, deviceId: string, onWake: () => void): void {
    const key = Notifier.key(userId, deviceId);
    const current = this.listeners.get(key);
    if (current === onWake) this.listeners.delete(key);
    else if (current instanceof Set) {
      current.delete(onWake);
      if (current.size === 0) this.listeners.delete(key);
    }
  }

  notify(userId: string, deviceId: string): void {
    const key = Notifier.key(userId, deviceId);
    const current = this.listeners.get(key);
    if (current === undefined) return;
    this.listeners.delete(key);
    this.wakeEach(current);
  }

  /** Ends every long-poll now and any later one at once (graceful shutdown: they answer instead of holding the server). */
  wakeAll(): void {
    this.closed = true;
    const all = [...this.listeners.values()];
    this.listeners.clear();
    for (const current of all) this.wakeEach(current);
  }

  /** Long-polls in flight, for metrics and tests. */
  get waiting(): number {
    let n = 0;
    for (const current of this.listeners.values()) n += current instanceof Set ? current.size : 1;
    return n;
  }

  /** Calls one waiting poll's wake-up; the one place a subclass needs to see each wake-up. */
  protected wake(onWake: () => void): void {
    onWake();
  }

  private wakeEach(current: (() => void) | Set<() => void>): void {
    if (current instanceof Set) for (const onWake of current) this.wake(onWake);
    else this.wake(current);
  }
}
