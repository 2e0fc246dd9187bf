import type { NewMessages } from '../storage/new-messages.ts';

/**
 * Wakes long-polling `/sync` requests of one device when a message for that device is stored.
 * In-process only; several processes are joined through PostgreSQL LISTEN/NOTIFY on top of this.
 *
 * A server may hold tens of thousands of parked long-polls, so a subscription allocates nothing
 * of its own: the caller's wake-up function is stored as it is (alone, or in a Set once a device
 * has several polls) and removed by identity, rather than wrapped or paired with a cancel closure.
 */
export type WakeUp = (news?: NewMessages) => void;

export class Notifier {
  /** user ID → device ID → wake-ups; by user, so that a `*` send can ask which of a user's devices wait. */
  private readonly listeners = new Map<string, Map<string, WakeUp | Set<WakeUp>>>();
  private closed = false;

  /** Registers a one-shot wake-up, until it is called or `unsubscribe` is called with it. */
  subscribe(userId: string, deviceId: string, onWake: WakeUp): void {
    if (this.closed) {
      queueMicrotask(() => this.wake(onWake, undefined));
      return;
    }
    let devices = this.listeners.get(userId);
    if (devices === undefined) this.listeners.set(userId, (devices = new Map()));
    const current = devices.get(deviceId);
    if (current === undefined) devices.set(deviceId, onWake);
    else if (current instanceof Set) current.add(onWake);
    else devices.set(deviceId, new Set([current, onWake]));
  }

  /** Cancels a wake-up registered with `subscribe`; harmless once it has been called. */
  unsubscribe(userId: string, deviceId: string, onWake: WakeUp): void {
    const devices = this.listeners.get(userId);
    if (devices === undefined) return;
    const current = devices.get(deviceId);
    if (current === onWake) devices.delete(deviceId);
    else if (current instanceof Set) {
      current.delete(onWake);
      if (current.size === 0) devices.delete(deviceId);
    }
    if (devices.size === 0) this.listeners.delete(userId);
  }

  /**
   * Wakes the device's waiting polls. `news`, when the caller stored the messages itself, is
   * what it stored: a poll may answer from it instead of reading (see {@link NewMessages}).
   */
  notify(userId: string, deviceId: string, news?: NewMessages): void {
    const devices = this.listeners.get(userId);
    const current = devices?.get(deviceId);
    if (devices === undefined || current === undefined) return;
    devices.delete(deviceId);
    if (devices.size === 0) this.listeners.delete(userId);
    this.wakeEach(current, news);
  }

  /** Whether a long-poll of this device is waiting here. */
  isWaiting(userId: string, deviceId: string): boolean {
    return this.listeners.get(userId)?.has(deviceId) === true;
  }

  /** The user's devices with a long-poll waiting here. */
  waitingDevices(userId: string): Iterable<string> {
    return this.listeners.get(userId)?.keys() ?? [];
  }

  /** Every device with a long-poll waiting here. */
  *waitingPairs(): Iterable<{ userId: string; deviceId: string }> {
    for (const [userId, devices] of this.listeners) for (const deviceId of devices.keys()) yield { userId, deviceId };
  }

  /** Ends every long-poll now and any later one at once (graceful shutdown: they answer instead of holding the server). */
  wakeAll(): void {
    this.closed = true;
    this.wakeWaiting();
  }

  /** Wakes every long-poll waiting now, so each reads its queue (wake-ups from other processes may have been missed). */
  wakeWaiting(): void {
    const all = [...this.listeners.values()].flatMap((devices) => [...devices.values()]);
    this.listeners.clear();
    for (const current of all) this.wakeEach(current);
  }

  /** Long-polls in flight, for metrics and tests. */
  get waiting(): number {
    let n = 0;
    for (const devices of this.listeners.values()) {
      for (const current of devices.values()) n += current instanceof Set ? current.size : 1;
    }
    return n;
  }

  /** Calls one waiting poll's wake-up; the one place a subclass needs to see each wake-up. */
  protected wake(onWake: WakeUp, news: NewMessages | undefined): void {
    onWake(news);
  }

  private wakeEach(current: WakeUp | Set<WakeUp>, news?: NewMessages): void {
    if (current instanceof Set) for (const onWake of current) this.wake(onWake, news);
    else this.wake(current, news);
  }
}
