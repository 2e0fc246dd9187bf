import type { SQL } from 'drizzle-orm';

/** Any drizzle database that runs raw SQL: the core's, or a module's typed with its own schema. */
interface ExecutesSql {
  execute(query: SQL): PromiseLike<unknown>;
}

/**
 * Runs raw SQL and returns its rows, on either driver: PGlite answers `{rows}`, postgres.js an
 * array.
 *
 * @since 1.0.0
 */
export async function queryRows<T>(db: ExecutesSql, query: SQL): Promise<T[]> {
  const result: unknown = await db.execute(query);
  if (Array.isArray(result)) return result as T[];
  return (result as { rows: T[] }).rows;
}
