import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // The first testModule of a test file boots an in-memory PostgreSQL (PGlite): about a second
    // on an idle machine, several on a loaded CI runner, past vitest's default of 5 s.
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
