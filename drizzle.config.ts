import { defineConfig } from 'drizzle-kit';

export default defineConfig({
  dialect: 'postgresql',
  // The core tables only: each handler module has its migrations of its own (see the README).
  schema: './src/storage/schema.ts',
  out: './drizzle',
});
