import { RateLimiter, type SetupContext, type SetupResult } from '../../src/sdk/index.ts';
import type { MlsConfig } from './config.ts';

/** What the module keeps per loaded instance (per server, not per process: tests run several). */
export interface MlsState {
  /** KeyPackage claims per claiming user (config `claim_rate`); in memory, so per process. */
  claimLimiter: RateLimiter;
}

export function setupMls(ctx: SetupContext<MlsConfig>): SetupResult<MlsState> {
  const { per_minute: perMinute, burst } = ctx.config.claim_rate;
  return { state: { claimLimiter: new RateLimiter(perMinute / 60, burst) } };
}
