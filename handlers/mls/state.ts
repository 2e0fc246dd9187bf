import type { SetupContext, SetupResult } from '../../src/sdk/index.ts';
import type { MlsConfig } from './config.ts';

/** The module keeps no state of its own; setup only tells the operator about retired settings. */
export function setupMls(ctx: SetupContext<MlsConfig>): SetupResult<undefined> {
  for (const setting of ['max_key_packages_per_device', 'claim_rate'] as const) {
    if (ctx.config[setting] !== undefined) {
      ctx.log.warn(`mls: config "${setting}" is ignored: KeyPackages are one-time keys of the keys API now (MSC4244)`);
    }
  }
  return { state: undefined };
}
