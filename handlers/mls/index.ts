import { defineHandler } from '../../src/sdk/index.ts';
import { mlsConfig } from './config.ts';
import { claimContent, countContent, mlsMessageContent, uploadContent } from './content-schemas.ts';
import { KEY_PACKAGES_CLAIM, KEY_PACKAGES_COUNT, KEY_PACKAGES_UPLOAD, MLS_MESSAGE } from './event-types.ts';
import { handleClaim, handleCount, handleUpload } from './key-package-handlers.ts';
import { handleMlsMessage } from './message-handler.ts';
import { setupMls } from './state.ts';

/**
 * An RFC 9420 Delivery Service as the server user (the role MSC4244 gives it): a KeyPackage
 * directory, and commit ordering with fan-out for MLS groups. See README.md beside this file
 * for every message shape.
 */
export default defineHandler({
  name: 'mls',
  config: mlsConfig,
  // Its tables (schema.ts), created where the module is loaded; `drizzle-kit generate` makes them.
  migrations: new URL('./drizzle', import.meta.url),
  setup: setupMls,
  events: {
    [KEY_PACKAGES_UPLOAD]: { schema: uploadContent, handle: handleUpload },
    [KEY_PACKAGES_CLAIM]: { schema: claimContent, handle: handleClaim },
    [KEY_PACKAGES_COUNT]: { schema: countContent, handle: handleCount },
    [MLS_MESSAGE]: { schema: mlsMessageContent, handle: handleMlsMessage },
  },
});
