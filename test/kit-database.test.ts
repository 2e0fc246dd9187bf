import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { defineHandler, queryRows } from '../src/sdk/index.ts';
import { kitTemplateFile } from '../src/testing/kit-database.ts';
import { testModule, type ModuleTester } from '../src/testing/index.ts';

// The kits of one process share PGlite instances (src/testing/kit-database.ts): what one kit
// leaves behind must be gone for the next, and a closed kit must not reach the next one's.
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** A module whose migration makes a bit of everything a module might: schema, table, sequence, type, function, index. */
function moduleWithObjects() {
  const dir = mkdtempSync(join(tmpdir(), 'kit-objects-'));
  dirs.push(dir);
  mkdirSync(join(dir, 'meta'));
  writeFileSync(
    join(dir, 'meta', '_journal.json'),
    JSON.stringify({ version: '7', dialect: 'postgresql', entries: [{ idx: 0, version: '7', when: 1_800_000_000_000, tag: '0000_objects', breakpoints: true }] }),
  );
  writeFileSync(
    join(dir, '0000_objects.sql'),
    [
      `CREATE TYPE "kit_mood" AS ENUM ('calm', 'busy')`,
      `CREATE TABLE "kit_notes" ("id" serial PRIMARY KEY, "note" text NOT NULL, "mood" "kit_mood")`,
      `CREATE INDEX "kit_filters_by_user" ON "filters" ("user_id", "filter_id")`,
      `CREATE SCHEMA "kit_own"`,
      `CREATE TABLE "kit_own"."things" ("id" integer)`,
      `CREATE SEQUENCE "kit_counter"`,
      `CREATE FUNCTION "kit_double"(x integer) RETURNS integer LANGUAGE sql AS 'select x * 2'`,
      `INSERT INTO "kit_notes" ("note") VALUES ('from the migration')`,
    ].join(';\n--> statement-breakpoint\n') + ';\n',
  );
  return defineHandler({ name: 'objects', migrations: dir, events: {} });
}

const count = async (kit: ModuleTester, query: string): Promise<number> =>
  Number(((await queryRows<{ n: number }>(kit.db, sql.raw(`select (${query})::int as n`)))[0] as { n: number }).n);

describe('the test kit\'s databases', () => {
  let kits: ModuleTester[] = [];
  afterEach(async () => {
    for (const kit of kits) await kit.close();
    kits = [];
  });

  it('give each kit the core\'s tables and nothing else, whatever the kit before it left', async () => {
    const objects = moduleWithObjects();
    for (let round = 0; round < 2; round++) {
      const kit = await testModule(objects);
      // Each round starts from scratch: the migration ran again (its row is the only one), the
      // serial starts at 1, the core's tables are empty.
      expect(await count(kit, `select count(*) from kit_notes`)).toBe(1);
      expect(await count(kit, `select max(id) from kit_notes`)).toBe(1);
      expect(await count(kit, `select count(*) from filters`)).toBe(0);
      expect(await count(kit, `select nextval('kit_counter')`)).toBe(1);
      expect(await count(kit, `select kit_double(21)`)).toBe(42);
      // What a test leaves: rows in a core table (and its sequence moved), in the module's.
      await kit.db.execute(sql`insert into filters (user_id, filter_json) values ('@alice:test.local', '{}')`);
      await kit.db.execute(sql`insert into kit_own.things values (1)`);
      expect(await count(kit, `select max(filter_id) from filters`)).toBe(1);
      await kit.close();
    }
    const plain = await testModule(defineHandler({ name: 'plain', events: {} }));
    kits.push(plain);
    expect(await count(plain, `select count(*) from pg_class where relname in ('kit_notes', 'kit_counter', 'kit_filters_by_user')`)).toBe(0);
    expect(await count(plain, `select count(*) from pg_namespace where nspname = 'kit_own'`)).toBe(0);
    expect(await count(plain, `select count(*) from pg_type where typname = 'kit_mood'`)).toBe(0);
    expect(await count(plain, `select count(*) from pg_proc where proname = 'kit_double'`)).toBe(0);
    expect(await count(plain, `select count(*) from drizzle.__drizzle_migrations`)).toBeGreaterThan(0);
    await plain.db.execute(sql`insert into filters (user_id, filter_json) values ('@bob:test.local', '{}')`);
    expect(await count(plain, `select max(filter_id) from filters`)).toBe(1);
  });

  it('refuse a closed kit\'s queries', async () => {
    const kit = await testModule(defineHandler({ name: 'plain', events: {} }));
    await kit.close();
    // drizzle wraps the refusal in its own "Failed query" error.
    await expect(kit.db.execute(sql`select 1`)).rejects.toMatchObject({ cause: { message: expect.stringMatching(/test kit is closed/) as unknown } });
    // Closing again is harmless.
    await kit.close();
  });

  it('give kits open at the same time databases of their own', async () => {
    const objects = moduleWithObjects();
    const a = await testModule(objects);
    const b = await testModule(defineHandler({ name: 'plain', events: {} }));
    kits.push(a, b);
    await a.db.execute(sql`insert into filters (user_id, filter_json) values ('@alice:test.local', '{}')`);
    expect(await count(b, `select count(*) from filters`)).toBe(0);
    expect(await count(b, `select count(*) from pg_class where relname = 'kit_notes'`)).toBe(0);
  });

  it('are started from a template that holds the one WAL segment a start reads, not the spare ones PostgreSQL keeps', async () => {
    kits.push(await testModule(moduleWithObjects()));
    const listing = execFileSync('tar', ['-tf', kitTemplateFile()], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const segments = listing.split('\n').filter((path) => /pg_wal\/[0-9A-F]{24}$/.test(path));
    expect(segments).toHaveLength(1);
  });
});
