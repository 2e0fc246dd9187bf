// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'examples/external-module/node_modules/', 'examples/external-module/dist/', 'data/', 'drizzle/', 'coverage/', 'scratch/', 'test/support/crypto-stub/', 'docs/api/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': ['error', { allow: ['error', 'warn'] }],
    },
  },
  {
    // Handler modules use the server only through its SDK, as a module in another repository must.
    files: ['handlers/**'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ regex: '^\\.\\./\\.\\./src/(?!sdk/index\\.ts$)', message: 'Handler modules import the server only from src/sdk/index.ts (matrix-to-device-server/sdk).' }] }],
    },
  },
  {
    // Their tests beside them use the test kit (matrix-to-device-server/testing), as an outside author's do.
    files: ['handlers/**/*.test.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ regex: '^\\.\\./\\.\\./src/(?!(sdk|testing)/index\\.ts$)', message: 'Module tests import the server only from src/sdk/index.ts and src/testing/index.ts.' }] }],
    },
  },
  {
    // CI's scripts run as plain Node.
    files: ['.ci/**/*.mjs'],
    languageOptions: { globals: { console: 'readonly', process: 'readonly', fetch: 'readonly', setTimeout: 'readonly' } },
    rules: { 'no-console': 'off' },
  },
  {
    files: ['examples/**', 'test/bench/**', 'src/main.ts'],
    rules: { 'no-console': 'off' },
  },
);
