import { defineHandler } from 'matrix-to-device-server/sdk';
import { bump, BUMP, type CounterState } from './bump.ts';
import { counterConfig } from './config.ts';
import { counterRoutes } from './routes.ts';
import { counterSchema } from './schema.ts';

/**
 * Per-user named counters behind the server user: an example of a handler module in its own
 * repository, with a table of its own (migrations in ../drizzle), a lifecycle, an HTTP route
 * and tests.
 */
export default defineHandler({
  name: 'counter',
  // The SDK versions this module is written for: a server with an SDK outside it refuses to load it.
  sdk: '^1.0.0',
  config: counterConfig,
  schema: counterSchema,
  // From src/ (TypeScript under `npm start`) and dist/ (the build) alike, the folder beside them.
  migrations: new URL('../drizzle', import.meta.url),
  setup(ctx) {
    const state: CounterState = { startedTs: ctx.clock.now(), bumps: 0 };
    ctx.log.info('counter module started', { max_name_length: ctx.config.max_name_length });
    return { state, stop: () => ctx.log.info('counter module stopped', { bumps: state.bumps }) };
  },
  events: { [BUMP]: bump },
  routes: counterRoutes,
});
