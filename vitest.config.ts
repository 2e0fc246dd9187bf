import { configDefaults, defineConfig } from 'vitest/config';

/**
 * Three tiers (`npm run test:unit`, `test:app`, `test:process`; `npm test` runs all three):
 * - unit: no database, no sockets, no child processes; seconds in all.
 * - app: whole servers in this process (`app.request`, or loopback peers beside them) on PGlite,
 *   or PostgreSQL with TEST_DATABASE_URL. The default for a new file.
 * - process: real server processes (src/main.ts), CLIs and scripts, real peers such as Synapse.
 * A file belongs to the tier of the heaviest thing it does.
 */
const UNIT = [
  'test/canonical-json.test.ts',
  'test/federation-signing.test.ts',
  'test/group-commit.test.ts',
  'test/mls-lazy.test.ts',
  'test/rate-limiter.test.ts',
  'test/retrying-runner.test.ts',
  'test/sdk-surface.test.ts',
  'test/sdk-types.test.ts',
  'test/send-plan.test.ts',
  'test/tar-without.test.ts',
];
const PROCESS = [
  'test/admin.test.ts',
  'test/config.test.ts',
  'test/e2ee-federation-js-sdk.test.ts',
  'test/examples-npm-start.test.ts',
  'test/examples.test.ts',
  'test/external-module.test.ts',
  'test/fan-out-limits.test.ts',
  'test/faults.test.ts',
  'test/federation-receiver-order.test.ts',
  'test/federation-tls.test.ts',
  'test/federation.test.ts',
  'test/group-commit-batching.test.ts',
  'test/handlers-examples.test.ts',
  'test/ha/ha.test.ts',
  'test/ha/load-balancer.test.ts',
  'test/handlers-mls-multi-process.test.ts',
  'test/hostile-input.test.ts',
  'test/keys-multi-process.test.ts',
  'test/npm-start-stop.test.ts',
  'test/pglite-lock.test.ts',
  'test/production-build.test.ts',
  'test/shutdown-leases.test.ts',
  'test/synapse-interop.test.ts',
];
const ALL = ['test/**/*.test.ts', 'handlers/**/*.test.ts'];

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Two cores: each file boots its own database or processes, so more workers only thrash.
    maxWorkers: 2,
    projects: [
      { extends: true, test: { name: 'unit', include: UNIT } },
      {
        extends: true,
        test: {
          name: 'app',
          // Each file starts its own PGlite, a large WebAssembly module, and most of its functions
          // run a few times at most: V8's optimizing tier-up of them cost more CPU than it won
          // back, and on two cores CPU is the suite's limit (issue 30: with this flag the tier took about a
          // quarter less time, same machine, back to back). Servers under test in the
          // process tier run with their own flags; production is not affected.
          execArgv: ['--liftoff-only'],
          include: ALL,
          exclude: [...configDefaults.exclude, ...UNIT, ...PROCESS],
          // Migrates one PGlite cluster for every test database to start from.
          globalSetup: ['test/support/global-setup.ts'],
        },
      },
      { extends: true, test: { name: 'process', include: PROCESS } },
    ],
  },
});
