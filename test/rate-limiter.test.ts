import { describe, expect, it } from 'vitest';
import { RateLimiter } from '../src/shared/rate-limiter.ts';
import { TestClock } from '../src/testing/test-clock.ts';

describe('rate limiter (token buckets on the injected clock)', () => {
  it('allows the burst, then answers how long to wait, and allows again exactly then', async () => {
    const clock = new TestClock(0);
    const limiter = new RateLimiter(2, 3, clock);
    for (let i = 0; i < 3; i++) expect(limiter.take('a')).toBe(0);
    const wait = limiter.take('a');
    expect(wait).toBe(500);
    await clock.advance(wait - 1);
    expect(limiter.take('a')).toBeGreaterThan(0);
    await clock.advance(1);
    expect(limiter.take('a')).toBe(0);
    expect(limiter.take('a')).toBe(500);
  });

  it('keeps a bucket per key, refilled up to the burst and no further', async () => {
    const clock = new TestClock(0);
    const limiter = new RateLimiter(1, 2, clock);
    expect(limiter.take('a')).toBe(0);
    expect(limiter.take('a')).toBe(0);
    expect(limiter.take('a')).toBe(1000);
    expect(limiter.take('b')).toBe(0);
    // An hour idle refills to the burst of 2, not 3,600.
    await clock.advance(3_600_000);
    expect(limiter.take('a')).toBe(0);
    expect(limiter.take('a')).toBe(0);
    expect(limiter.take('a')).toBe(1000);
  });

  it('is off with per_second 0', () => {
    const limiter = new RateLimiter(0, 0, new TestClock(0));
    expect(limiter.enabled).toBe(false);
    for (let i = 0; i < 100; i++) expect(limiter.take('a')).toBe(0);
  });
});
