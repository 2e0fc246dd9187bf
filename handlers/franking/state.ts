import type { SetupContext, SetupResult } from '../../src/sdk/index.ts';
import type { FrankingConfig } from './config.ts';
import { FrankingKeyStore } from './key-store.ts';

/** What the module keeps per loaded instance. */
export interface FrankingState {
  /** Keeps the current key in memory for a few seconds, instead of a read per frank. */
  keys: FrankingKeyStore;
}

const CURRENT_KEY_CACHE_MS = 10_000;

/** Makes sure a franking key exists before the first frank, so the first sender does not wait for it. */
export async function setupFranking(ctx: SetupContext<FrankingConfig>): Promise<SetupResult<FrankingState>> {
  const keys = new FrankingKeyStore(ctx.db, CURRENT_KEY_CACHE_MS, () => ctx.clock.now());
  const key = await keys.current();
  ctx.log.debug('franking key ready', { version: key.version });
  return { state: { keys } };
}
