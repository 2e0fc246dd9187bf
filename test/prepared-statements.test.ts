import { eq, inArray } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../src/storage/drivers/database.ts';
import { MAX_PREPARED_PARAMETERS } from '../src/storage/drivers/prepared-statements.ts';
import { devices } from '../src/storage/schema.ts';
import { createPostgresDatabaseUrl, usingPostgres } from './support/test-database.ts';

// Prepared statements are a postgres.js matter; PGlite runs in process with no round trips.
describe.skipIf(!usingPostgres())('prepared statements on PostgreSQL', () => {
  let target: { url: string; drop(): Promise<void> };
  const open: Database[] = [];

  beforeAll(async () => {
    const created = await createPostgresDatabaseUrl();
    if (created === null) throw new Error('TEST_DATABASE_URL is set, so a database can be made');
    target = created;
  });

  afterAll(async () => {
    for (const d of open) await d.close();
    await target.drop();
  });

  /** One connection, so pg_prepared_statements (per session) shows what drizzle's queries left. */
  async function oneConnection(preparedStatements?: boolean): Promise<Database> {
    const d = await openDatabase({ kind: 'postgres', url: target.url, poolSize: 1, ...(preparedStatements === undefined ? {} : { preparedStatements }) });
    open.push(d);
    return d;
  }

  async function preparedTexts(d: Database, marker: string): Promise<string[]> {
    const rows = await d.pg!.unsafe<{ statement: string }[]>('select statement from pg_prepared_statements');
    return rows.map((r) => r.statement).filter((s) => s.includes(marker));
  }

  it('prepares queries with parameters, in and out of transactions, and they still answer right', async () => {
    const d = await oneConnection();
    const rows = await d.db.select({ id: devices.deviceId }).from(devices).where(eq(devices.userId, '@nobody:prep.test'));
    expect(rows).toEqual([]);
    expect(await preparedTexts(d, '"user_id" = $1')).toHaveLength(1);

    // The same text again reuses the statement rather than preparing another.
    await d.db.select({ id: devices.deviceId }).from(devices).where(eq(devices.userId, '@other:prep.test'));
    expect(await preparedTexts(d, '"user_id" = $1')).toHaveLength(1);

    const inTx = await d.db.transaction(async (tx) =>
      tx.select({ user: devices.userId }).from(devices).where(eq(devices.deviceId, 'PREPTX')),
    );
    expect(inTx).toEqual([]);
    expect(await preparedTexts(d, '"device_id" = $1')).toHaveLength(1);
  });

  it(`leaves statements with more than ${MAX_PREPARED_PARAMETERS} parameters unprepared`, async () => {
    const d = await oneConnection();
    const ids = Array.from({ length: MAX_PREPARED_PARAMETERS + 1 }, (_, i) => `DEV${i}`);
    expect(await d.db.select({ id: devices.deviceId }).from(devices).where(inArray(devices.deviceId, ids))).toEqual([]);
    expect(await preparedTexts(d, `$${MAX_PREPARED_PARAMETERS + 1}`)).toEqual([]);
  });

  it('prepares nothing when prepared_statements is off (for poolers that cannot keep them)', async () => {
    const d = await oneConnection(false);
    await d.db.select({ id: devices.deviceId }).from(devices).where(eq(devices.userId, '@nobody:prep.test'));
    expect(await preparedTexts(d, '"user_id" = $1')).toEqual([]);
  });
});
