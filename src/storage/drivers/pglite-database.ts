import type { PGlite } from '@electric-sql/pglite';
import type * as DrizzlePglite from 'drizzle-orm/pglite';
import type * as DrizzlePgliteMigrator from 'drizzle-orm/pglite/migrator';
import type { Database, Db } from './database.ts';
import { CORE_MIGRATIONS, countingApplied } from './migrations-applied.ts';
import { installRawTextParsers } from './pglite-parsers.ts';
import { withPglitePrepared } from './pglite-prepared.ts';
import * as schema from '../schema.ts';

// Apart from database.ts, which holds PostgreSQL's driver: the test kit, on PGlite alone, then
// loads neither postgres.js nor drizzle's driver for it.

let pgliteDrizzle: Promise<[typeof DrizzlePglite, typeof DrizzlePgliteMigrator]> | null = null;

/**
 * drizzle's PGlite driver and migrator, imported once (not statically: a process on PostgreSQL
 * never needs them). Whoever is about to start a PGlite may call it first: right after a PGlite
 * has started, the same imports took several times as long in a test kit's start (kit-database.ts).
 */
export function importPgliteDrizzle(): Promise<[typeof DrizzlePglite, typeof DrizzlePgliteMigrator]> {
  return (pgliteDrizzle ??= Promise.all([import('drizzle-orm/pglite'), import('drizzle-orm/pglite/migrator')]));
}

/**
 * A Database over a PGlite that is already running, set up as openDatabase sets up its own
 * (raw-text parsers, prepared statements). `close` is what closing the Database does: the test
 * kit hands its instance back to a pool instead of closing it; `migrateCore: false` when the
 * caller knows the core's migrations are applied.
 */
export async function pgliteDatabase(raw: PGlite, opts: { migrateCore: boolean; close: () => Promise<void> }): Promise<Database> {
  const [{ drizzle: drizzlePglite }, { migrate: migratePglite }] = await importPgliteDrizzle();
  installRawTextParsers(raw);
  const client = withPglitePrepared(raw);
  const db = drizzlePglite(client, { schema });
  if (opts.migrateCore) await migratePglite(db, { migrationsFolder: CORE_MIGRATIONS });
  return {
    db: db as unknown as Db,
    kind: 'pglite',
    pg: null,
    migrate: (m) => countingApplied(db as unknown as Db, m.table, () => migratePglite(db, { migrationsFolder: m.folder, migrationsTable: m.table })),
    withSchema: (s) => drizzlePglite(client, { schema: s ?? {} }) as never,
    dumpDataDir: async () => client.dumpDataDir('none'),
    close: opts.close,
  };
}

