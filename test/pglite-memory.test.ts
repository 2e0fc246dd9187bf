import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/storage/drivers/database.ts';

/**
 * `database.pglite_shared_buffers_mb` is the one memory setting an operator of the embedded
 * database can trade (see pglite-durable.ts): it must reach PostgreSQL, on a fresh directory
 * (created in a child process) and on reopening it.
 */
const dir = mkdtempSync(join(tmpdir(), 'tds-pglite-memory-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function settingsOf(dataDir: string, sharedBuffersMb?: number): Promise<Record<string, string>> {
  const database = await openDatabase({ kind: 'pglite', dataDir, ...(sharedBuffersMb === undefined ? {} : { sharedBuffersMb }) });
  try {
    const result = (await database.db.execute(sql`select name, current_setting(name) as value from unnest(array['shared_buffers', 'wal_buffers', 'fsync']) as name`)) as unknown as { rows: { name: string; value: string }[] };
    return Object.fromEntries(result.rows.map((r) => [r.name, r.value]));
  } finally {
    await database.close();
  }
}

describe('PGlite memory settings', () => {
  it('a fresh directory opens with PostgreSQL\'s 128 MB of shared buffers by default, durable', async () => {
    expect(await settingsOf(join(dir, 'default'))).toEqual({ shared_buffers: '128MB', wal_buffers: '4MB', fsync: 'on' });
  }, 120_000);

  it('takes a smaller buffer pool when configured, keeping the WAL buffers; the data is there on reopening', async () => {
    const dataDir = join(dir, 'small');
    const database = await openDatabase({ kind: 'pglite', dataDir, sharedBuffersMb: 16 });
    await database.db.execute(sql`create table kept (v text)`);
    await database.db.execute(sql`insert into kept values ('still here')`);
    await database.close();
    expect(await settingsOf(dataDir, 16)).toEqual({ shared_buffers: '16MB', wal_buffers: '4MB', fsync: 'on' });
    const again = await openDatabase({ kind: 'pglite', dataDir, sharedBuffersMb: 16 });
    try {
      const rows = (await again.db.execute(sql`select v from kept`)) as unknown as { rows: { v: string }[] };
      expect(rows.rows).toEqual([{ v: 'still here' }]);
    } finally {
      await again.close();
    }
  }, 120_000);
});
