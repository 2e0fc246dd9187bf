import { defineHandler } from '../../src/sdk/index.ts';
import { frankingConfig } from './config.ts';
import { frankContent, keysContent, listReportsContent, reportContent, rotateKeyContent } from './content-schemas.ts';
import { FRANK, GET_KEYS, LIST_REPORTS, REPORT, ROTATE_KEY } from './event-types.ts';
import { handleFrank, handleKeys } from './frank-handler.ts';
import { handleListReports, handleRotateKey } from './moderation-handlers.ts';
import { handleReport } from './report-handler.ts';
import { frankingRoutes } from './routes.ts';
import { setupFranking } from './state.ts';

/**
 * Message franking for abuse reports, after the MIMI protocol draft: the server user franks
 * franking tags, verifies reports, keeps verified ones for moderators (who list them over HTTP,
 * routes.ts), and rotates its keys.
 * See README.md beside this file for every message shape.
 */
export default defineHandler({
  name: 'franking',
  config: frankingConfig,
  // Its tables (schema.ts), created where the module is loaded; `drizzle-kit generate` makes them.
  migrations: new URL('./drizzle', import.meta.url),
  setup: setupFranking,
  routes: frankingRoutes,
  events: {
    [FRANK]: { schema: frankContent, handle: handleFrank },
    [GET_KEYS]: { schema: keysContent, handle: handleKeys },
    [REPORT]: { schema: reportContent, handle: handleReport },
    [LIST_REPORTS]: { schema: listReportsContent, handle: handleListReports },
    [ROTATE_KEY]: { schema: rotateKeyContent, handle: handleRotateKey },
  },
});
