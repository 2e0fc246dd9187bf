// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'examples/external-module/node_modules/', 'examples/external-module/dist/', 'data/', 'drizzle/', 'coverage/', 'scratch/', 'test/support/crypto-stub/'] },
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
    files: ['examples/**', 'test/bench/**', 'src/main.ts'],
    rules: { 'no-console': 'off' },
  },
);
