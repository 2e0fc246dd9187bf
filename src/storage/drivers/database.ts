import { mkdirSync } from 'node:fs';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js';
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import { lockDataDir } from './data-dir-lock.ts';
import { CORE_MIGRATIONS, countingApplied } from './migrations-applied.ts';
import { pgliteDatabase } from './pglite-database.ts';
import { postgresJsUrl } from './postgres-url.ts';
import { withPreparedStatements } from './prepared-statements.ts';
import { withWaitTimeout } from './wait-timeout.ts';
import * as schema from '../schema.ts';

/** The drizzle database, whichever driver is underneath; stores and handlers use only this. */
export type Db = PgDatabase<PgQueryResultHKT, typeof schema>;

export interface Database {
  readonly db: Db;
  readonly kind: 'pglite' | 'postgres';
  /** The postgres.js client when on PostgreSQL (for NOTIFY); null on PGlite. */
  readonly pg: postgres.Sql | null;
  /**
   * Applies a drizzle-kit migrations folder recorded in a table of its own (in the `drizzle`
   * schema, beside the core's): how a handler module's tables come and go with the module.
   * Returns how many migrations were new.
   */
  migrate(migrations: MigrationsSource): Promise<number>;
  /**
   * A drizzle database on the same connection, typed with and knowing another schema (a handler
   * module's own tables, for its `db.query.<table>`); closed with this one.
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  withSchema<S extends Record<string, any>>(schema: S | undefined): PgDatabase<PgQueryResultHKT, S>;
  /** PGlite only: the whole cluster as a tarball, to start copies of it. */
  dumpDataDir?(): Promise<Blob>;
  close(): Promise<void>;
}

/**
 * What openDatabase returns: a Database and, on PostgreSQL, the connection to LISTEN on. Apart
 * from Database so that the type the test kit exports (the SDK surface) stays as it was.
 */
export interface ServerDatabase extends Database {
  /** The client to LISTEN on: a direct connection (database.listen_url), never a transaction pooler's. */
  readonly listener: postgres.Sql | null;
}

export interface MigrationsSource {
  folder: string;
  table: string;
}

export type DatabaseOptions =
  | {
      kind: 'postgres';
      url: string;
      /** A direct connection for LISTEN and migrations (their session advisory lock); default `url`. */
      listenUrl?: string;
      poolSize?: number;
      /** Default true, see prepared-statements.ts. */
      preparedStatements?: boolean;
      /** How long a query may wait for a connection before it fails (wait-timeout.ts); default 5000. */
      waitTimeoutMs?: number;
    }
  | {
      kind: 'pglite';
      dataDir: string | null;
      /** Default true: every commit is on disk before it is acknowledged (see pglite-durable.ts). */
      fsync?: boolean;
      /** PostgreSQL's shared_buffers in MB; default 128, PostgreSQL's own (see pglite-durable.ts). */
      sharedBuffersMb?: number;
      /** In memory only: start from this dump (dumpDataDir) instead of an empty cluster; the test kit's template. */
      loadDataDir?: Blob;
    };

// Arbitrary constant: serialises migrations when several processes start on one database.
const MIGRATION_LOCK = 4246_0001;

export async function openDatabase(opts: DatabaseOptions): Promise<ServerDatabase> {
  if (opts.kind === 'pglite') {
    // Loaded only when used: a server on PostgreSQL has no use for PGlite's code (~2 MB resident).
    const [{ PGlite }, { pgliteOptions }, { initDataDirApart }] = await Promise.all([
      import('@electric-sql/pglite'),
      import('./pglite-durable.ts'),
      import('./pglite-init.ts'),
    ]);
    if (opts.dataDir !== null) mkdirSync(opts.dataDir, { recursive: true });
    // Before PGlite touches the directory: a second process must not even start recovery on it.
    const lock = opts.dataDir === null ? null : lockDataDir(opts.dataDir);
    try {
      if (opts.dataDir !== null) await initDataDirApart(opts.dataDir);
      const raw = opts.dataDir === null ? new PGlite(opts.loadDataDir === undefined ? {} : { loadDataDir: opts.loadDataDir }) : new PGlite(pgliteOptions(opts.dataDir, opts.fsync ?? true, opts.sharedBuffersMb ?? 128));
      await raw.waitReady;
      const database = await pgliteDatabase(raw, {
        migrateCore: true,
        close: async () => {
          try {
            await raw.close();
          } finally {
            lock?.release();
          }
        },
      });
      return { ...database, listener: null };
    } catch (e) {
      lock?.release();
      throw e;
    }
  }
  const url = postgresJsUrl(opts.url);
  const listenUrl = postgresJsUrl(opts.listenUrl ?? opts.url);
  await migrate(listenUrl, { folder: CORE_MIGRATIONS, table: '__drizzle_migrations' });
  const client = postgres(url, {
    max: opts.poolSize ?? 10,
    onnotice: () => {},
    // A dead server must fail requests quickly, not hang them.
    connect_timeout: 10,
    // Off, postgres.js's own queries (NOTIFY among them) are not prepared either: behind a
    // transaction pooler a statement prepared on one server session is missing on the next, and
    // the error that comes back after the pooler let go of the session breaks the connection.
    ...(opts.preparedStatements === false ? { prepare: false } : {}),
  });
  // postgres.js opens LISTEN's connection from the options of the client it is called on.
  const listener = listenUrl === url ? client : postgres(listenUrl, { max: 1, onnotice: () => {}, connect_timeout: 10 });
  const bounded = withWaitTimeout(client, opts.waitTimeoutMs ?? 5_000);
  const sqlClient = opts.preparedStatements === false ? bounded : withPreparedStatements(bounded);
  const db = drizzlePostgres(sqlClient, { schema });
  return {
    db: db as unknown as Db,
    kind: 'postgres',
    pg: client,
    listener,
    migrate: (m) => migrate(listenUrl, m),
    withSchema: (s) => drizzlePostgres(sqlClient, { schema: s ?? {} }) as never,
    close: async () => {
      await Promise.all([client.end({ timeout: 5 }), listener === client ? undefined : listener.end({ timeout: 5 })]);
    },
  };
}

/**
 * Migrates on a connection of its own, holding an advisory lock so that processes starting
 * together take turns. Own connection: the lock is per session, and borrowing one from the pool
 * would leave a pool of one nothing to migrate with. `url` must reach PostgreSQL directly: a
 * transaction-mode pooler runs the unlock on another server session than the lock.
 */
async function migrate(url: string, m: MigrationsSource): Promise<number> {
  const conn = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 10 });
  try {
    await conn`select pg_advisory_lock(${MIGRATION_LOCK})`;
    const db = drizzlePostgres(conn, { schema });
    const applied = await countingApplied(db as unknown as Db, m.table, () => migratePostgres(db, { migrationsFolder: m.folder, migrationsTable: m.table }));
    const [unlocked] = await conn<{ unlocked: boolean }[]>`select pg_advisory_unlock(${MIGRATION_LOCK}) as unlocked`;
    if (unlocked?.unlocked !== true) throw new MigrationLockError();
    return applied;
  } finally {
    await conn.end({ timeout: 1 });
  }
}

/** The migrations' advisory lock was not held by the session that released it: a transaction pooler is in the way. */
export class MigrationLockError extends Error {
  constructor() {
    super(
      'The migrations\' advisory lock was released on another database session than the one that took it: the database URL goes through a ' +
        'transaction pooler (e.g. PgBouncer in transaction mode), which cannot hold session locks or LISTEN. ' +
        'Set database.listen_url (DATABASE_LISTEN_URL) to a direct connection to PostgreSQL.',
    );
    this.name = 'MigrationLockError';
  }
}
