import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import type { Db } from './database.ts';

/** The core's drizzle-kit migrations folder (`drizzle/`, beside `src/` in the checkout and in `dist/`). */
export const CORE_MIGRATIONS = fileURLToPath(new URL('../../../drizzle', import.meta.url));

/** Runs a migrator and counts the rows it added to its table (drizzle's migrator does not say). */
export async function countingApplied(db: Db, table: string, run: () => Promise<void>): Promise<number> {
  const count = async (): Promise<number> => {
    const result: unknown = await db.execute(sql`select to_regclass(${`drizzle.${table}`}) is not null as present`);
    const rows = Array.isArray(result) ? result : (result as { rows: unknown[] }).rows;
    if ((rows[0] as { present: boolean } | undefined)?.present !== true) return 0;
    const counted: unknown = await db.execute(sql`select count(*)::int as n from ${sql.identifier('drizzle')}.${sql.identifier(table)}`);
    const countRows = Array.isArray(counted) ? counted : (counted as { rows: unknown[] }).rows;
    return (countRows[0] as { n: number }).n;
  };
  const before = await count();
  await run();
  return (await count()) - before;
}
