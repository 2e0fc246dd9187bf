import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { openDatabase, type Database } from '../../src/storage/drivers/database.ts';
import { readPgliteTemplate } from './pglite-template.ts';

let template: Promise<Blob | null> | null = null;

/**
 * A fresh database for one test file: in-memory PGlite by default (started from the migrated
 * template that global-setup.ts made, when there is one), or a new database on the PostgreSQL
 * server named by TEST_DATABASE_URL (dropped again by `close`), reached through the pooler
 * TEST_DATABASE_POOLER_URL names when it is set.
 */
export async function createTestDatabase(): Promise<Database> {
  const adminUrl = process.env.TEST_DATABASE_URL;
  if (adminUrl === undefined || adminUrl === '') return openPgliteInMemory();

  const name = `tds_test_${randomBytes(6).toString('hex')}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  // Through a transaction pooler (TEST_DATABASE_POOLER_URL, e.g. PgBouncer): queries go through
  // it, unprepared, and LISTEN and migrations over the direct URL, as docs/topologies.md says.
  const poolerUrl = process.env.TEST_DATABASE_POOLER_URL;
  const pooled = poolerUrl === undefined || poolerUrl === '' ? null : new URL(poolerUrl);
  if (pooled !== null) pooled.pathname = `/${name}`;
  const database = await openDatabase(
    pooled === null
      ? { kind: 'postgres', url: url.toString(), poolSize: 10 }
      : { kind: 'postgres', url: pooled.toString(), listenUrl: url.toString(), preparedStatements: false, poolSize: 10 },
  );
  return {
    ...database,
    async close() {
      await database.close();
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

/** A fresh in-memory PGlite database, migrated (from the template when there is one), whatever TEST_DATABASE_URL says. */
export async function openPgliteInMemory(): Promise<Database> {
  template ??= readPgliteTemplate();
  const blob = await template;
  return openDatabase({ kind: 'pglite', dataDir: null, ...(blob === null ? {} : { loadDataDir: blob }) });
}

/** A new, empty PostgreSQL database for a server process; null when not testing on PostgreSQL. */
export async function createPostgresDatabaseUrl(): Promise<{ url: string; drop(): Promise<void> } | null> {
  const adminUrl = process.env.TEST_DATABASE_URL;
  if (adminUrl === undefined || adminUrl === '') return null;
  const name = `tds_test_${randomBytes(6).toString('hex')}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

export const usingPostgres = (): boolean => (process.env.TEST_DATABASE_URL ?? '') !== '';
