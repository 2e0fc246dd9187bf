import type { SQL } from 'drizzle-orm';
import type { Db } from './database.ts';

/** Runs raw SQL and returns its rows; PGlite answers `{rows}`, postgres.js an array. */
export async function queryRows<T>(db: Db, query: SQL): Promise<T[]> {
  const result: unknown = await db.execute(query);
  if (Array.isArray(result)) return result as T[];
  return (result as { rows: T[] }).rows;
}
