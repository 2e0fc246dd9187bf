import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/storage/drivers/database.ts';

/**
 * PGlite on a data directory flushes every commit by default (docs/guarantees.md): PostgreSQL
 * runs with fsync on and flushes its WAL with fsync (the operation durable mode gives PGlite's
 * Node file system); `pglite_fsync: false` is PGlite's own setting. An OS crash cannot be
 * simulated here; the fsync calls were counted with strace (docs/guarantees.md), this checks the settings
 * a server actually runs with and that committed data is read back after reopening.
 */
const dir = mkdtempSync(join(tmpdir(), 'tds-durable-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function settings(fsync: boolean | undefined): Promise<Record<string, string>> {
  const database = await openDatabase({ kind: 'pglite', dataDir: join(dir, String(fsync ?? true)), ...(fsync === undefined ? {} : { fsync }) });
  try {
    await database.db.execute(sql`create table if not exists t (n int)`);
    await database.db.execute(sql`insert into t values (1)`);
    const rows = (await database.db.execute(sql`select name, setting from pg_settings where name in ('fsync', 'wal_sync_method', 'synchronous_commit')`)) as unknown as
      | { rows: { name: string; setting: string }[] }
      | { name: string; setting: string }[];
    const list = Array.isArray(rows) ? rows : rows.rows;
    return Object.fromEntries(list.map((r) => [r.name, r.setting]));
  } finally {
    await database.close();
  }
}

describe('PGlite durability', () => {
  it('flushes every commit by default', async () => {
    expect(await settings(undefined)).toEqual({ fsync: 'on', wal_sync_method: 'fsync', synchronous_commit: 'on' });
  });

  it('runs with PGlite\'s own fsync off when pglite_fsync is false', async () => {
    expect((await settings(false)).fsync).toBe('off');
  });

  it('reads back what was committed after reopening, in either mode', async () => {
    for (const fsync of [true, false]) {
      const database = await openDatabase({ kind: 'pglite', dataDir: join(dir, String(fsync)), fsync });
      try {
        const res = (await database.db.execute(sql`select count(*)::int as n from t`)) as unknown as { rows: { n: number }[] };
        expect(res.rows[0]?.n).toBeGreaterThanOrEqual(1);
      } finally {
        await database.close();
      }
    }
  });
});
