import type { Clock } from '../sdk/clock.ts';
import { systemClock } from '../server-user/system-clock.ts';

/**
 * Token buckets per key (Synapse's `per_second` / `burst_count` model): a key may make
 * `burstCount` requests at once, refilled at `perSecond`. In memory, so per process.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perSecond: number,
    private readonly burstCount: number,
    private readonly clock: Clock = systemClock,
  ) {}

  get enabled(): boolean {
    return this.perSecond > 0;
  }

  /** Takes one token; returns 0 when allowed, else how long to wait in milliseconds. */
  take(key: string, now = this.clock.now()): number {
    if (!this.enabled) return 0;
    const bucket = this.buckets.get(key) ?? { tokens: this.burstCount, at: now };
    bucket.tokens = Math.min(this.burstCount, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond);
    bucket.at = now;
    if (bucket.tokens < 1) {
      this.buckets.set(key, bucket);
      return Math.ceil(((1 - bucket.tokens) / this.perSecond) * 1000);
    }
    bucket.tokens -= 1;
    this.buckets.set(key, bucket);
    if (this.buckets.size > 50_000) this.sweep(now);
    return 0;
  }

  /** Forgets buckets that have refilled: they are the same as no bucket. */
  private sweep(now: number): void {
    for (const [key, b] of this.buckets) {
      if (b.tokens + ((now - b.at) / 1000) * this.perSecond >= this.burstCount) this.buckets.delete(key);
    }
  }
}
