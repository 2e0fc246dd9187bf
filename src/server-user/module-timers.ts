import type { Clock } from '../sdk/clock.ts';

/**
 * A module's view of the clock: every timer it starts is remembered until it fires, so that
 * the ones still pending when the module stops are cancelled (a timer firing into a stopped
 * module would use a closed database).
 */
export class ModuleTimers implements Clock {
  private readonly pending = new Set<() => void>();
  private stopped = false;

  constructor(private readonly clock: Clock) {}

  now(): number {
    return this.clock.now();
  }

  setTimeout(fn: () => void, ms: number): () => void {
    if (this.stopped) return () => {};
    const cancel = this.clock.setTimeout(() => {
      this.pending.delete(cancel);
      fn();
    }, ms);
    this.pending.add(cancel);
    return () => {
      this.pending.delete(cancel);
      cancel();
    };
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted === true) return reject(signal.reason as Error);
      if (this.stopped) return reject(new Error('the module has stopped'));
      const onAbort = (): void => {
        cancel();
        reject(signal?.reason as Error);
      };
      const cancel = this.setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Cancels every pending timer; later ones are not started. */
  cancelAll(): void {
    this.stopped = true;
    for (const cancel of this.pending) cancel();
    this.pending.clear();
  }
}
