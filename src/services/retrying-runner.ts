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
  /**
   * Several processes: only the holder of a key's lease sends it. A process that finds the
   * lease taken looks again after `retryMs`, so work it queued is never left behind.
   */
  lease?: { acquire(key: string): Promise<boolean>; release(key: string): Promise<void>; retryMs: number };
}

/**
 * Drains a queue per key (a federation destination, an appservice), one step at a time per
 * key, woken when work arrives; on failure, exponential backoff with jitter per key, during
 * which wake-ups are ignored (the retry will find the new work too).
 */
export class RetryingRunner {
  private readonly keys = new Map<string, KeyState>();
  /** Keys whose lease this runner holds right now. */
  private readonly held = new Set<string>();
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

  /** Stops sending and gives up held leases, so a restarted process can take over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const state of this.keys.values()) if (state.timer !== null) clearTimeout(state.timer);
    const lease = this.opts.lease;
    if (lease === undefined) return;
    await Promise.all([...this.held].map((key) => lease.release(key).catch(() => {})));
    this.held.clear();
  }

  private async run(key: string, state: KeyState): Promise<void> {
    state.running = true;
    const lease = this.opts.lease;
    let held = false;
    try {
      if (lease !== undefined) {
        held = await lease.acquire(key);
        if (held) this.held.add(key);
        if (!held) {
          this.schedule(key, state, lease.retryMs);
          return;
        }
      }
      do {
        state.again = false;
        while (!this.stopped && (await this.opts.step(key))) {
          state.attempts = 0;
          // Renew, and notice if the lease was lost (e.g. this process stalled past its expiry).
          if (lease !== undefined && !(await lease.acquire(key))) {
            held = false;
            return;
          }
        }
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
      this.schedule(key, state, delay);
    } finally {
      state.running = false;
      if (held && lease !== undefined) {
        this.held.delete(key);
        await lease.release(key).catch((e: unknown) => this.opts.log.warn('releasing a queue lease failed', { key, err: String(e) }));
      }
    }
  }

  private schedule(key: string, state: KeyState, delayMs: number): void {
    state.timer = setTimeout(() => {
      state.timer = null;
      if (!this.stopped) void this.run(key, state);
    }, delayMs);
    state.timer.unref();
  }
}
