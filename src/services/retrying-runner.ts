import type { Logger } from '../logger.ts';

interface KeyState {
  running: boolean;
  /** A wake-up arrived while running: look again before stopping. */
  again: boolean;
  attempts: number;
  timer: NodeJS.Timeout | null;
}

export interface RetryingRunnerOptions {
  /** Does one unit of work for `key`; false when there is nothing left. Throws to back off. */
  step(key: string): Promise<boolean>;
  backoff: { initialMs: number; maxMs: number };
  log: Logger;
  onFailure?(key: string, attempts: number, err: unknown): void;
}

/**
 * Drains a queue per key (a federation destination, an appservice), one step at a time per
 * key, woken when work arrives; on failure, exponential backoff with jitter per key, during
 * which wake-ups are ignored (the retry will find the new work too).
 */
export class RetryingRunner {
  private readonly keys = new Map<string, KeyState>();
  private stopped = false;

  constructor(private readonly opts: RetryingRunnerOptions) {}

  wake(key: string): void {
    if (this.stopped) return;
    let state = this.keys.get(key);
    if (state === undefined) {
      state = { running: false, again: false, attempts: 0, timer: null };
      this.keys.set(key, state);
    }
    if (state.running) {
      state.again = true;
      return;
    }
    if (state.timer !== null) return;
    void this.run(key, state);
  }

  stop(): void {
    this.stopped = true;
    for (const state of this.keys.values()) if (state.timer !== null) clearTimeout(state.timer);
  }

  /** Keys currently backing off, with their failed attempts. */
  backingOff(): Record<string, number> {
    return Object.fromEntries([...this.keys].filter(([, s]) => s.timer !== null).map(([k, s]) => [k, s.attempts]));
  }

  private async run(key: string, state: KeyState): Promise<void> {
    state.running = true;
    try {
      do {
        state.again = false;
        while (!this.stopped && (await this.opts.step(key))) state.attempts = 0;
      } while (state.again && !this.stopped);
      state.attempts = 0;
    } catch (e) {
      state.attempts += 1;
      const { initialMs, maxMs } = this.opts.backoff;
      const base = Math.min(maxMs, initialMs * 2 ** Math.min(state.attempts - 1, 30));
      // Jitter in [base/2, base]: peers that failed together do not retry together.
      const delay = Math.round(base / 2 + Math.random() * (base / 2));
      this.opts.onFailure?.(key, state.attempts, e);
      this.opts.log.warn('send failed; backing off', { key, attempts: state.attempts, delayMs: delay, err: String(e) });
      state.timer = setTimeout(() => {
        state.timer = null;
        if (!this.stopped) void this.run(key, state);
      }, delay);
      state.timer.unref();
    } finally {
      state.running = false;
    }
  }
}
