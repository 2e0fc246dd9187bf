import type { Clock } from '../sdk/clock.ts';

interface Timer {
  at: number;
  seq: number;
  fn: () => void;
}

/**
 * The test kit's clock (`kit.clock`), which the module sees as `ctx.clock`: time stands still
 * until the test moves it with `advance`, which fires the timers that fall due in order and
 * waits for the work they start (periodic task runs) before the next. Starts at the real time
 * when the kit is made, unless told otherwise.
 *
 * @since 1.0.0
 */
export class TestClock implements Clock {
  private time: number;
  private timers: Timer[] = [];
  private seq = 0;
  /** Set by the kit: waits for work the fired timers started. */
  settle: () => Promise<void> = async () => {};

  constructor(startAt = Date.now()) {
    this.time = startAt;
  }

  now(): number {
    return this.time;
  }

  setTimeout(fn: () => void, ms: number): () => void {
    const timer: Timer = { at: this.time + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted === true) return reject(signal.reason as Error);
      const cancel = this.setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = (): void => {
        cancel();
        reject(signal?.reason as Error);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Moves time forward by `ms`, firing every timer due by then, earliest first, each one's work awaited. */
  async advance(ms: number): Promise<void> {
    const until = this.time + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.at <= until).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (due === undefined) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.time = due.at;
      due.fn();
      await this.settle();
    }
    this.time = until;
  }

  /** How many timers are waiting: none after the module has stopped. */
  get pending(): number {
    return this.timers.length;
  }
}
