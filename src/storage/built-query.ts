import { Placeholder, sql, type Query, type SQL } from 'drizzle-orm';
import { PgDialect } from 'drizzle-orm/pg-core';
import type { Db } from './drivers/database.ts';

const dialect = new PgDialect();

/** The driver client under a drizzle database or transaction: postgres.js's, or PGlite's. */
type Client = { unsafe(text: string, params: unknown[]): PromiseLike<unknown[]> } | { query(text: string, params: unknown[]): Promise<{ rows: unknown[] }> };

/**
 * A statement whose SQL text is built once, from drizzle `sql` with {@link placeholder}s for its
 * values, and then only run, straight on the driver (the client drizzle's session holds: the
 * transaction's inside one). drizzle's `execute` builds the text again on every call and runs it
 * through several layers of promises; for the statement of a single send that was a tenth of the
 * server's CPU per request (issue 30's S1 at 1 connection). The driver wrappers (prepared
 * statements, the wait timeout) still apply: they wrap the client.
 */
export class BuiltQuery<V extends Record<string, unknown>> {
  private built: Query | null = null;

  constructor(private readonly build: () => SQL) {}

  async rows<T>(db: Db, values: V): Promise<T[]> {
    const built = (this.built ??= dialect.sqlToQuery(this.build()));
    const params = built.params.map((p) => (p instanceof Placeholder ? values[p.name] : p));
    const client = (db as unknown as { session: { client: Client } }).session.client;
    if ('unsafe' in client) return (await client.unsafe(built.sql, params)) as T[];
    return (await client.query(built.sql, params)).rows as T[];
  }
}

/** A value of a {@link BuiltQuery}, given when it runs. */
export const placeholder = (name: string): Placeholder => sql.placeholder(name);
