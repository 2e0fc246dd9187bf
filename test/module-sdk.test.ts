import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import * as v from 'valibot';
import { afterAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/app.ts';
import { parseConfig } from '../src/config/config.ts';
import { defineHandler, queryRows } from '../src/sdk/index.ts';
import type { AnyHandlerModule } from '../src/server-user/module-checks.ts';
import { openDatabase, type Database } from '../src/storage/drivers/database.ts';
import { testModule } from '../src/testing/index.ts';
import ping from '../handlers/ping/index.ts';
import mls from '../handlers/mls/index.ts';
import { createPostgresDatabaseUrl, openPgliteInMemory } from './support/test-database.ts';

/** The core's migrations, as drizzle-kit's journal lists them. */
const coreMigrations = (JSON.parse(readFileSync(new URL('../drizzle/meta/_journal.json', import.meta.url), 'utf8')) as { entries: unknown[] }).entries.length;
const dirs: string[] = [];
const dropAfter: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const drop of dropAfter) await drop();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** One database that outlives a server: a PGlite directory, or a PostgreSQL database under TEST_DATABASE_URL. */
async function persistentDatabase(): Promise<() => Promise<Database>> {
  const pg = await createPostgresDatabaseUrl();
  if (pg !== null) {
    dropAfter.push(() => pg.drop());
    return () => openDatabase({ kind: 'postgres', url: pg.url, poolSize: 2 });
  }
  const dir = mkdtempSync(join(tmpdir(), 'tds-sdk-'));
  dirs.push(dir);
  return () => openDatabase({ kind: 'pglite', dataDir: join(dir, 'pglite') });
}

/** A whole server's start and stop (createApp → start → stop), as `npm start` does them. */
async function runServer(database: Database, handlers: AnyHandlerModule[]): Promise<void> {
  const built = createApp({ config: parseConfig({ server_name: 'sdk.test' }), database, handlers: handlers.map((module) => ({ module })) });
  await built.start();
  await built.stop();
}

async function tableExists(database: Database, name: string): Promise<boolean> {
  const [row] = await queryRows<{ present: boolean }>(database.db, sql`select to_regclass(${name}) is not null as present`);
  return row?.present === true;
}

function migrationsFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tds-sdk-migrations-'));
  dirs.push(dir);
  mkdirSync(join(dir, 'meta'));
  writeFileSync(
    join(dir, 'meta', '_journal.json'),
    JSON.stringify({ version: '7', dialect: 'postgresql', entries: [{ idx: 0, version: '7', when: 1_800_000_000_000, tag: '0000_notes', breakpoints: true }] }),
  );
  // Not idempotent on purpose: applied a second time, the CREATE would fail and the INSERT add a row.
  writeFileSync(join(dir, '0000_notes.sql'), `CREATE TABLE "sdk_notes" ("id" serial PRIMARY KEY, "note" text NOT NULL);\n--> statement-breakpoint\nINSERT INTO "sdk_notes" ("note") VALUES ('from 0000');\n`);
  return dir;
}

describe('a module\'s migrations', () => {
  it('are applied only where the module is loaded, into its own migrations table, and once', async () => {
    const open = await persistentDatabase();
    const notes = defineHandler({ name: 'notes', migrations: migrationsFolder(), events: {} });

    let db = await open();
    await runServer(db, [ping]);
    expect(await tableExists(db, 'sdk_notes')).toBe(false);
    await db.close();

    for (let start = 0; start < 2; start++) {
      db = await open();
      await runServer(db, [ping, notes]);
      expect(await queryRows(db.db, sql`select note from sdk_notes`)).toEqual([{ note: 'from 0000' }]);
      expect(await queryRows(db.db, sql`select count(*)::int as n from drizzle.module_notes_migrations`)).toEqual([{ n: 1 }]);
      // The core sequence is untouched by it: exactly the core's own migrations.
      expect(await queryRows(db.db, sql`select count(*)::int as n from drizzle.__drizzle_migrations`)).toEqual([{ n: coreMigrations }]);
      await db.close();
    }
  });

  it('take over tables a database already has from the core sequence (mls before it had migrations of its own)', async () => {
    const open = await persistentDatabase();
    let db = await open();
    // What the core sequence's former 0004_mls created: the module's first migration without IF NOT EXISTS.
    const oldSql = readFileSync(new URL('../handlers/mls/drizzle/0000_mls.sql', import.meta.url), 'utf8').replaceAll(' IF NOT EXISTS', '');
    for (const statement of oldSql.split('--> statement-breakpoint')) await db.db.execute(sql.raw(statement));
    await db.db.execute(sql`insert into mls_groups (group_id, epoch, creator_user_id, created_ts, updated_ts) values ('g', 3, '@a:sdk.test', 1, 1)`);
    await db.close();

    db = await open();
    await runServer(db, [mls]);
    // 0001_keys_api: the retired directory's table goes, groups stay (in the unstable family they were made in).
    expect(await queryRows(db.db, sql`select group_id, epoch::int, family from mls_groups`)).toEqual([{ group_id: 'g', epoch: 3, family: 'org.matrix.msc4244' }]);
    expect(await tableExists(db, 'mls_key_packages')).toBe(false);
    expect(await queryRows(db.db, sql`select count(*)::int as n from drizzle.module_mls_migrations`)).toEqual([{ n: 2 }]);
    await db.close();
  });
});

describe('module lifecycle', () => {
  it('sets modules up in load order, gives handlers their state, and stops them in reverse', async () => {
    const calls: string[] = [];
    const make = (name: string, setupMs: number) =>
      defineHandler({
        name,
        async setup(ctx) {
          calls.push(`setup ${name} begins`);
          await new Promise((r) => setTimeout(r, setupMs));
          calls.push(`setup ${name} ends`);
          return { state: { name, serverUser: ctx.serverUserId }, stop: async () => void calls.push(`stop ${name}`) };
        },
        events: {
          [`org.example.${name}`]: {
            schema: v.object({}),
            handle: async (_event, ctx) => void calls.push(`handled by ${ctx.state.name} as ${ctx.state.serverUser}`),
          },
        },
      });
    const database = await openPgliteInMemory();
    // The first sets up slowest: the second must still wait for it.
    const built = createApp({ config: parseConfig({ server_name: 'sdk.test' }), database, handlers: [make('a', 50), make('b', 0), make('c', 10)].map((module) => ({ module })) });
    await built.start();
    await built.dispatcher.dispatch([{ type: 'org.example.b', sender: '@u:sdk.test', senderDevice: 'D', origin: 'client', content: {} }]);
    await built.stop();
    await database.close();
    expect(calls).toEqual([
      'setup a begins',
      'setup a ends',
      'setup b begins',
      'setup b ends',
      'setup c begins',
      'setup c ends',
      'handled by b as @:sdk.test',
      'stop c',
      'stop b',
      'stop a',
    ]);
  });

  it('fails the start when a setup throws, naming the module, after stopping those already set up', async () => {
    const calls: string[] = [];
    const ok = defineHandler({ name: 'ok', setup: () => ({ state: 1, stop: () => void calls.push('stop ok') }), events: {} });
    const broken = defineHandler({
      name: 'broken',
      setup: () => {
        throw new Error('no key file');
      },
      events: {},
    });
    const database = await openPgliteInMemory();
    const built = createApp({ config: parseConfig({ server_name: 'sdk.test' }), database, handlers: [{ module: ok }, { module: broken }] });
    await expect(built.start()).rejects.toThrow('handler module "broken" failed to start: no key file');
    expect(calls).toEqual(['stop ok']);
    await database.close();
  });
});

describe('ctx.signal', () => {
  it('is aborted when the dispatch deadline passes, and not for a handler that finished in time', async () => {
    const seen: { type: string; aborted: boolean; reason?: string }[] = [];
    let lateFinished: () => void = () => {};
    const finishedLate = new Promise<void>((resolve) => (lateFinished = resolve));
    const mod = defineHandler({
      name: 'slow',
      events: {
        'org.example.slow': {
          schema: v.object({}),
          async handle(_event, ctx) {
            await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
            seen.push({ type: 'slow', aborted: ctx.signal.aborted, reason: (ctx.signal.reason as Error).name });
            await ctx.reply('org.example.gave_up', {});
            lateFinished();
          },
        },
        'org.example.quick': {
          schema: v.object({}),
          async handle(_event, ctx) {
            await ctx.reply('org.example.done', {});
            seen.push({ type: 'quick', aborted: ctx.signal.aborted });
          },
        },
      },
    });
    const kit = await testModule(mod, { deadlineMs: 100 });
    try {
      const started = performance.now();
      expect(await kit.deliver('org.example.quick', {})).toMatchObject({ outcome: 'handled', sent: [{ type: 'org.example.done' }] });
      const slow = await kit.deliver('org.example.slow', {});
      expect(slow.outcome).toBe('timeout');
      expect(performance.now() - started).toBeGreaterThanOrEqual(99);
      await finishedLate;
      expect(seen).toEqual([
        { type: 'quick', aborted: false },
        { type: 'slow', aborted: true, reason: 'TimeoutError' },
      ]);
      // A handler past its deadline may still send.
      expect(kit.sent.map((m) => m.type)).toEqual(['org.example.done', 'org.example.gave_up']);
    } finally {
      await kit.close();
    }
  });
});

describe('the test kit', () => {
  it('delivers as any origin and records what the module sent and to whom', async () => {
    const replier = defineHandler({
      name: 'replier',
      events: {
        'org.example.ask': {
          schema: v.object({ n: v.number() }),
          async handle(event, ctx) {
            await ctx.reply('org.example.answer', { n: event.content.n + 1 }, { deviceId: 'PHONE' });
            await ctx.send('org.example.cc', { from: event.sender }, { userId: '@carol:test.local', deviceId: 'TABLET' });
          },
        },
      },
    });
    const kit = await testModule(replier);
    try {
      expect(await kit.deliver('org.example.ask', { n: 1 })).toEqual({
        outcome: 'handled',
        sent: [
          // The sending device is known: it is the one answered, whatever the handler names.
          { userId: '@alice:test.local', deviceId: 'ALICEDEVICE', type: 'org.example.answer', content: { n: 2 } },
          { userId: '@carol:test.local', deviceId: 'TABLET', type: 'org.example.cc', content: { from: '@alice:test.local' } },
        ],
      });
      const remote = await kit.deliver('org.example.ask', { n: 5 }, { sender: '@bob:remote.example', origin: 'federation' });
      // Over federation there is no sending device: the one the handler names is used.
      expect(remote.sent[0]).toEqual({ userId: '@bob:remote.example', deviceId: 'PHONE', type: 'org.example.answer', content: { n: 6 } });
      expect(await kit.deliver('org.example.ask', { n: 'x' })).toEqual({ outcome: 'invalid_content', sent: [] });
      expect(await kit.deliver('org.example.unknown', {})).toEqual({ outcome: 'unknown_type', sent: [] });
    } finally {
      await kit.close();
    }
  });
});
