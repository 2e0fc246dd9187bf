import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../src/storage/drivers/database.ts';
import { openPgliteInMemory } from './support/test-database.ts';
import { queryRows } from '../src/shared/query-rows.ts';
import { devices, users } from '../src/storage/schema.ts';

// PGlite's queries run as prepared statements (src/storage/drivers/pglite-prepared.ts): one session, so
// pg_prepared_statements shows every statement the server prepared.
describe('prepared statements on PGlite', () => {
  let d: Database;

  beforeAll(async () => {
    d = await openPgliteInMemory();
  });

  afterAll(async () => {
    await d.close();
  });

  async function preparedTexts(marker: string): Promise<string[]> {
    const rows = await queryRows<{ statement: string }>(d.db, sql`select statement from pg_prepared_statements`);
    return rows.map((r) => r.statement).filter((s) => s.includes(marker));
  }

  it('prepares a parameterised query once and answers every later run of its text right', async () => {
    await d.db.insert(users).values({ userId: '@p1:prep.test', localpart: 'p1', createdTs: 1 });
    await d.db.insert(users).values({ userId: '@p2:prep.test', localpart: 'p2', createdTs: 2 });
    const one = await d.db.select({ ts: users.createdTs }).from(users).where(eq(users.userId, '@p1:prep.test'));
    const two = await d.db.select({ ts: users.createdTs }).from(users).where(eq(users.userId, '@p2:prep.test'));
    expect([one, two]).toEqual([[{ ts: 1 }], [{ ts: 2 }]]);
    expect(await preparedTexts('select "created_ts" from "users" where "users"."user_id" = $1')).toHaveLength(1);
  });

  it('passes strings through exactly: quotes, backslashes and SQL in a value stay data', async () => {
    const nasty = `o'hara\\'); drop table users; --\n\u00e9\u{1F600}`;
    await d.db.insert(users).values({ userId: '@nasty:prep.test', localpart: nasty, createdTs: 3 });
    const rows = await d.db.select({ localpart: users.localpart }).from(users).where(eq(users.localpart, nasty));
    expect(rows).toEqual([{ localpart: nasty }]);
    expect((await d.db.select().from(users)).length).toBeGreaterThanOrEqual(3);
  });

  it('keeps working across a rolled-back transaction, and inside transactions', async () => {
    await expect(
      d.db.transaction(async (tx) => {
        await tx.insert(devices).values({ userId: '@p1:prep.test', deviceId: 'ROLLED', createdTs: 4 });
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    const inTx = await d.db.transaction(async (tx) => {
      await tx.insert(devices).values({ userId: '@p1:prep.test', deviceId: 'KEPT', createdTs: 5 });
      return tx.select({ id: devices.deviceId }).from(devices).where(eq(devices.userId, '@p1:prep.test'));
    });
    expect(inTx).toEqual([{ id: 'KEPT' }]);
  });

  it('fails a text PostgreSQL cannot type with its own error, and runs a cached plan whose table changed afresh', async () => {
    // No type for $1 (42P18): the error is the query's, as it would be unprepared.
    await expect(queryRows(d.db, sql`select count(*) as n from users where ${'@p1:prep.test'} is not null`)).rejects.toMatchObject({ cause: { code: '42P18' } });
    expect(await d.db.select({ ts: users.createdTs }).from(users).where(eq(users.userId, '@p1:prep.test'))).toEqual([{ ts: 1 }]);
    await queryRows(d.db, sql`create table prep_probe (id int primary key)`);
    await queryRows(d.db, sql`insert into prep_probe values (${1})`);
    expect(await queryRows(d.db, sql`select * from prep_probe where id = ${1}`)).toEqual([{ id: 1 }]);
    await queryRows(d.db, sql`alter table prep_probe add column note text default 'new'`);
    expect(await queryRows(d.db, sql`select * from prep_probe where id = ${1}`)).toEqual([{ id: 1, note: 'new' }]);
  });
});
