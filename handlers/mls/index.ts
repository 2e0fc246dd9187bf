import { defineHandler } from '../../src/sdk/index.ts';
import { mlsConfig } from './config.ts';
import { mlsMessageContent } from './content-schemas.ts';
import { MLS_MESSAGE, MLS_MESSAGE_UNSTABLE, RETIRED_DIRECTORY } from './event-types.ts';
import { mlsKeyAlgorithm } from './key-package-algorithm.ts';
import { handleMlsMessage } from './message-handler.ts';
import { handleRetiredDirectory } from './retired-directory.ts';
import { setupMls } from './state.ts';

/**
 * MSC4244's delivery service as the server user (MSC4246): KeyPackages as `mls` one-time keys
 * of the keys API (validated at upload, matched at claim), and commit ordering with fan-out for
 * MLS groups (`m.mls.message` in; `m.mls.commit`, `m.mls.rejected`, the Welcome out). See
 * README.md beside this file for every message shape.
 */
export default defineHandler({
  name: 'mls',
  config: mlsConfig,
  // Its tables (schema.ts), created where the module is loaded; `drizzle-kit generate` makes them.
  migrations: new URL('./drizzle', import.meta.url),
  setup: setupMls,
  keyAlgorithms: [mlsKeyAlgorithm],
  events: {
    [MLS_MESSAGE]: { schema: mlsMessageContent, handle: handleMlsMessage },
    [MLS_MESSAGE_UNSTABLE]: { schema: mlsMessageContent, handle: handleMlsMessage },
    ...Object.fromEntries(RETIRED_DIRECTORY.map((type) => [type, handleRetiredDirectory])),
  },
});
