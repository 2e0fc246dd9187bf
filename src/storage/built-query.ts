import { sql, type Placeholder, type Query, type SQL } from 'drizzle-orm';
import { PgDialect, type PgSession } from 'drizzle-orm/pg-core';
import type { Db } from './drivers/database.ts';

const dialect = new PgDialect();

/**
 * A statement whose SQL text is built once, from drizzle `sql` with {@link placeholder}s for its
 * values, and then only run: drizzle's `execute` builds the text again on every call, which for
 * the statement of a single send was a tenth of the server's CPU per request (issue 30's S1 at
 * 1 connection). Runs on whatever `db` it is given, a transaction's included, on either driver.
 */
export class BuiltQuery<V extends Record<string, unknown>> {
  private built: Query | null = null;

  constructor(private readonly build: () => SQL) {}

  async rows<T>(db: Db, values: V): Promise<T[]> {
    this.built ??= dialect.sqlToQuery(this.build());
    // drizzle's own path for `execute`, minus the building: the session is the transaction's
    // inside one, and its prepared query fills the placeholders.
    const session = (db as unknown as { session: PgSession }).session;
    const result: unknown = await session.prepareQuery(this.built, undefined, undefined, false).execute(values);
    if (Array.isArray(result)) return result as T[];
    return (result as { rows: T[] }).rows;
  }
}

/** A value of a {@link BuiltQuery}, given when it runs. */
export const placeholder = (name: string): Placeholder => sql.placeholder(name);
