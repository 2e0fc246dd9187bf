import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../src/logger.ts';
import { RetryingRunner, type RetryingRunnerOptions } from '../src/runtime/retrying-runner.ts';
import { TestClock } from '../src/testing/test-clock.ts';

/** Lets the runner's promise chains run to their next wait (no I/O here, so a few turns suffice). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

function runner(clock: TestClock, opts: Partial<RetryingRunnerOptions> & Pick<RetryingRunnerOptions, 'step'>): RetryingRunner {
  return new RetryingRunner({ backoff: { initialMs: 1_000, maxMs: 8_000 }, maxConcurrent: 4, log: createLogger('silent'), clock, ...opts });
}

describe('retrying runner on the injected clock', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('backs off exponentially, capped, ignoring wake-ups meanwhile; a success resets it', async () => {
    // Jitter pinned to the middle of its range: each delay is 3/4 of its base.
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    const clock = new TestClock(0);
    const attempts: number[] = [];
    let failing = true;
    const r = runner(clock, {
      step: async () => {
        attempts.push(clock.now());
        if (failing) throw new Error('down');
        return false;
      },
    });
    r.wake('k');
    await settle();
    expect(attempts).toEqual([0]);
    // Bases 1, 2, 4, 8, 8 s (the cap): retries 750, 1,500, 3,000, 6,000 and 6,000 ms apart.
    for (const delay of [750, 1_500, 3_000, 6_000, 6_000]) {
      const count = attempts.length;
      await clock.advance(delay - 1);
      r.wake('k');
      await settle();
      expect(attempts).toHaveLength(count);
      await clock.advance(1);
      await settle();
      expect(attempts).toHaveLength(count + 1);
    }
    expect(attempts).toEqual([0, 750, 2_250, 5_250, 11_250, 17_250]);
    failing = false;
    await clock.advance(6_000);
    await settle();
    expect(attempts).toHaveLength(7);
    // Done: forgotten, and the next wake-up runs at once.
    expect(r.size).toBe(0);
    r.wake('k');
    await settle();
    expect(attempts).toHaveLength(8);
    await r.stop();
  });

  it('spreads retries over [base/2, base]', async () => {
    for (const [random, delay] of [
      [0, 500],
      [0.999_999, 1_000],
    ] as const) {
      vi.spyOn(Math, 'random').mockReturnValue(random);
      const clock = new TestClock(0);
      let steps = 0;
      const r = runner(clock, {
        step: async () => {
          steps++;
          throw new Error('down');
        },
      });
      r.wake('k');
      await settle();
      await clock.advance(delay - 1);
      await settle();
      expect(steps).toBe(1);
      await clock.advance(1);
      await settle();
      expect(steps).toBe(2);
      await r.stop();
    }
  });

  it('looks again retryMs after finding the lease taken, and renews a held lease only once it is renewAfterMs old', async () => {
    const clock = new TestClock(0);
    const acquired: number[] = [];
    let taken = true;
    let steps = 0;
    const r = runner(clock, {
      step: async () => {
        steps++;
        // Each step takes 2 s of the clock; five steps, then the queue is empty.
        await clock.sleep(2_000);
        return steps < 5;
      },
      lease: {
        acquire: async () => {
          acquired.push(clock.now());
          return !taken;
        },
        release: async () => {},
        retryMs: 1_000,
        renewAfterMs: 5_000,
      },
    });
    r.wake('k');
    await settle();
    expect(acquired).toEqual([0]);
    expect(steps).toBe(0);
    taken = false;
    await clock.advance(999);
    await settle();
    expect(acquired).toEqual([0]);
    await clock.advance(1);
    await settle();
    expect(acquired).toEqual([0, 1_000]);
    for (let i = 0; i < 5; i++) {
      await clock.advance(2_000);
      await settle();
    }
    expect(steps).toBe(5);
    // Taken at 1 s; steps end at 3, 5, 7, 9 and 11 s: renewed at 7 s (6 s old), then at 13 s
    // it would be due again, but the last step (at 11 s, 4 s old) found the queue empty.
    expect(acquired).toEqual([0, 1_000, 7_000]);
    await r.stop();
  });

  it('stops: pending retries are cancelled and later wake-ups ignored', async () => {
    const clock = new TestClock(0);
    let steps = 0;
    const r = runner(clock, {
      step: async () => {
        steps++;
        throw new Error('down');
      },
    });
    r.wake('a');
    r.wake('b');
    await settle();
    expect(steps).toBe(2);
    expect(clock.pending).toBe(2);
    await r.stop();
    expect(clock.pending).toBe(0);
    r.wake('c');
    await clock.advance(60_000);
    await settle();
    expect(steps).toBe(2);
  });

  it('retries a step that found the database away about a second later, without growing the key\'s backoff or counting a failure', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    const clock = new TestClock(0);
    const attempts: number[] = [];
    const failures: number[] = [];
    let outcome: 'away' | 'refused' | 'ok' = 'away';
    const r = runner(clock, {
      onFailure: (_key, n) => failures.push(n),
      step: async () => {
        attempts.push(clock.now());
        // What postgres.js throws while the database is away (a failover, a restart).
        if (outcome === 'away') throw Object.assign(new Error('write CONNECTION_CLOSED 127.0.0.1:5432'), { code: 'CONNECTION_CLOSED' });
        if (outcome === 'refused') throw new Error('the destination answered 500');
        return false;
      },
    });
    r.wake('k');
    await settle();
    // An outage of a minute: every second again, never a failure of the destination.
    for (let i = 0; i < 60; i++) {
      await clock.advance(1_000);
      await settle();
    }
    expect(attempts).toHaveLength(61);
    expect(failures).toEqual([]);
    // The database back, the destination failing: its backoff starts from the first step.
    outcome = 'refused';
    await clock.advance(1_000);
    await settle();
    expect(failures).toEqual([1]);
    const before = attempts.length;
    await clock.advance(749);
    await settle();
    expect(attempts).toHaveLength(before);
    outcome = 'ok';
    await clock.advance(1);
    await settle();
    expect(attempts).toHaveLength(before + 1);
    expect(r.size).toBe(0);
    await r.stop();
  });
});

