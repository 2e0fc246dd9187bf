import type { Logger } from '../logger.ts';
import type { Clock } from '../sdk/clock.ts';
import { systemClock } from '../server-user/system-clock.ts';
import { isDatabaseUnavailable } from '../storage/drivers/database-unavailable.ts';

// While the database is away (a failover takes seconds), every key looks again this soon.
const DATABASE_RETRY_MS = 1_000;

interface KeyState {
  running: boolean;
  /** Waiting for a free slot (in `ready`). */
  queued: boolean;
  /** A wake-up arrived while running: look again before stopping. */
  again: boolean;
  attempts: number;
  /** Cancels the pending retry; null when none is pending. */
  timer: (() => void) | null;
}

export interface RetryingRunnerOptions {
  /** Does one unit of work for `key`; false when there is nothing left. Throws to back off. */
  step(key: string): Promise<boolean>;
  /**
   * Asked before anything else of a key's turn (before its lease): throws to back off without
   * touching the database, e.g. when the destination does not answer at all.
   */
  precheck?(key: string): Promise<void>;
  backoff: { initialMs: number; maxMs: number };
  /** Keys worked on at once; the others wait their turn in wake-up order. */
  maxConcurrent: number;
  log: Logger;
  /** Times backoffs and lease renewals; the system clock unless a test drives its own. */
  clock?: Clock;
  onFailure?(key: string, attempts: number, err: unknown): void;
  /**
   * Several processes: only the holder of a key's lease sends it. A process that finds the
   * lease taken looks again after `retryMs`, so work it queued is never left behind.
   */
  lease?: {
    acquire(key: string): Promise<boolean>;
    release(key: string): Promise<void>;
    retryMs: number;
    /**
     * Between steps the lease is renewed only once it is this old, not after every step (a
     * write and a commit per step would compete with the sends). 0 renews after every step.
     */
    renewAfterMs?: number;
  };
}

/**
 * Drains a queue per key (a federation destination, an appservice), one step at a time per
 * key, woken when work arrives; on failure, exponential backoff with jitter per key, during
 * which wake-ups are ignored (the retry will find the new work too).
 *
 * At most `maxConcurrent` keys run at once: one request fanning out to 50,000 servers costs a
 * small record per waiting server, not 50,000 connections, lookups and queries in flight, and
 * the process keeps serving while it works through them. What is left for a key is in the
 * database; the record only says when to look again, and goes once the key's queue is empty.
 */
export class RetryingRunner {
  private readonly keys = new Map<string, KeyState>();
  /** Keys waiting for a slot, in the order they became ready. */
  private readonly ready = new Set<string>();
  private active = 0;
  /** Keys whose lease this runner holds right now. */
  private readonly held = new Set<string>();
  private stopped = false;
  private readonly clock: Clock;

  constructor(private readonly opts: RetryingRunnerOptions) {
    this.clock = opts.clock ?? systemClock;
  }

  /** Keys known to the runner: running, waiting for a slot, or backing off. */
  get size(): number {
    return this.keys.size;
  }

  wake(key: string): void {
    if (this.stopped) return;
    let state = this.keys.get(key);
    if (state === undefined) {
      state = { running: false, queued: false, again: false, attempts: 0, timer: null };
      this.keys.set(key, state);
    }
    if (state.running) {
      state.again = true;
      return;
    }
    if (state.timer !== null || state.queued) return;
    this.enqueue(key, state);
  }

  /** Stops sending and gives up held leases, so a restarted process can take over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.ready.clear();
    for (const state of this.keys.values()) state.timer?.();
    const lease = this.opts.lease;
    if (lease === undefined) return;
    await Promise.all([...this.held].map((key) => lease.release(key).catch(() => {})));
    this.held.clear();
  }

  private enqueue(key: string, state: KeyState): void {
    state.queued = true;
    this.ready.add(key);
    this.pump();
  }

  private pump(): void {
    while (!this.stopped && this.active < this.opts.maxConcurrent && this.ready.size > 0) {
      const key = this.ready.values().next().value as string;
      this.ready.delete(key);
      const state = this.keys.get(key);
      if (state === undefined) continue;
      state.queued = false;
      this.active++;
      void this.run(key, state).finally(() => {
        this.active--;
        this.pump();
      });
    }
  }

  private async run(key: string, state: KeyState): Promise<void> {
    state.running = true;
    const lease = this.opts.lease;
    let held = false;
    let acquiredAt = 0;
    let finished = false;
    try {
      await this.opts.precheck?.(key);
      if (lease !== undefined) {
        held = await lease.acquire(key);
        acquiredAt = this.clock.now();
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
          if (lease !== undefined && this.clock.now() - acquiredAt >= (lease.renewAfterMs ?? 0)) {
            if (!(await lease.acquire(key))) {
              held = false;
              return;
            }
            acquiredAt = this.clock.now();
          }
        }
      } while (state.again && !this.stopped);
      state.attempts = 0;
      finished = true;
    } catch (e) {
      if (isDatabaseUnavailable(e)) {
        // Not the destination's fault: its backoff does not grow, and it resumes with the database.
        this.opts.log.debug('database unavailable; retrying soon', { key, err: String(e) });
        this.schedule(key, state, Math.round(DATABASE_RETRY_MS / 2 + Math.random() * DATABASE_RETRY_MS));
        return;
      }
      state.attempts += 1;
      const { initialMs, maxMs } = this.opts.backoff;
      const base = Math.min(maxMs, initialMs * 2 ** Math.min(state.attempts - 1, 30));
      // Jitter in [base/2, base]: peers that failed together do not retry together.
      const delay = Math.round(base / 2 + Math.random() * (base / 2));
      this.opts.onFailure?.(key, state.attempts, e);
      // Logged at the 1st, 4th, 16th… failure in a row: thousands of dead destinations must not
      // turn into thousands of log lines per retry round (each failure is counted regardless).
      const log = Math.log2(state.attempts) % 2 === 0 ? this.opts.log.warn : this.opts.log.debug;
      log.call(this.opts.log, 'send failed; backing off', { key, attempts: state.attempts, delayMs: delay, err: String(e) });
      this.schedule(key, state, delay);
    } finally {
      if (held && lease !== undefined) {
        this.held.delete(key);
        await lease.release(key).catch((e: unknown) => this.opts.log.warn('releasing a queue lease failed', { key, err: String(e) }));
      }
      // Only now: a wake-up during the release must not start a second run beside this one.
      state.running = false;
      // Nothing left and nothing pending: forget the key (a wake-up creates it again).
      if (finished && !state.again && state.timer === null && !state.queued) this.keys.delete(key);
      else if (state.again && state.timer === null && !state.queued && !this.stopped) this.enqueue(key, state);
    }
  }

  private schedule(key: string, state: KeyState, delayMs: number): void {
    state.timer = this.clock.setTimeout(() => {
      state.timer = null;
      if (!this.stopped) this.enqueue(key, state);
    }, delayMs);
  }
}
