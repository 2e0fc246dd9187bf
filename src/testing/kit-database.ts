/**
 * The test kit's databases. Starting a PGlite is what a kit costs: running initdb is seconds,
 * loading a migrated cluster from a tarball still a few hundred milliseconds of CPU (the WASM
 * instance, untarring the cluster, PostgreSQL's start), while emptying one a kit has used is a
 * few tens. So:
 *  - the core's migrations are applied once per machine and version: the migrated cluster is
 *    kept as a tarball in the temporary folder, and every later process starts from it;
 *  - a process keeps the PGlite instances its kits have closed, emptied, and hands them to its
 *    next kits: a test file boots one instance, however many kits its tests open one after
 *    another (kits open at the same time each get their own).
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PGlite } from '@electric-sql/pglite';
import type { Database } from '../storage/drivers/database.ts';
import { importPgliteDrizzle, pgliteDatabase } from '../storage/drivers/pglite-database.ts';
import { tarWithout } from './tar-without.ts';

// A kit's tables are small: PGlite's default 128 MB of shared buffers cost a tenth of a second
// of each start (measured on PGlite 0.5.16) and buy nothing here.
export const KIT_POSTGRESQL_CONF = ['shared_buffers = 16MB'];
// 1 MB WAL segments instead of 16 MB: the template tarball, untarred at every start, is smaller.
const INITDB = ['--wal-segsize=1'];
// An idle instance keeps a timer of PGlite's running, which keeps a process from exiting; it is
// closed once no kit has taken it for this long (the next kit of a test file takes it at once).
const IDLE_MS = 2000;
// Bumped when what the template holds changes for a reason the key below does not see.
const TEMPLATE_FORMAT = '4';

/** What an instance held right after the core's migrations, for emptying it back to that. */
interface Baseline {
  /** Every object with a greater OID was created since (PostgreSQL hands OIDs out in order). */
  readonly maxOid: number;
  /** The query naming which of the tables empty at the baseline have rows now. */
  readonly nonEmpty: string;
  /** Sequences by qualified name, and their last value then (null: never used). */
  readonly sequences: Readonly<Record<string, string | null>>;
}

interface Instance {
  readonly raw: PGlite;
  readonly baseline: Baseline;
  idleTimer?: NodeJS.Timeout;
}

const idle: Instance[] = [];
/** The template tarball, and its baseline when saved beside it; null: none yet. */
let template: Promise<{ tarball: Blob; baseline: Baseline | null } | null> | null = null;

/**
 * A database for one kit: a PGlite holding the core's tables and nothing else. Closing it empties
 * it and hands it back to the process's next kit; queries through it after that throw.
 */
export async function kitDatabase(): Promise<Database> {
  const taken = idle.pop();
  if (taken !== undefined) clearTimeout(taken.idleTimer);
  const instance = taken ?? (await startInstance());
  let open = true;
  return pgliteDatabase(gated(instance.raw, () => open), {
    migrateCore: false,
    close: async () => {
      if (!open) return;
      open = false;
      await giveBack(instance);
    },
  });
}

/** Where the migrated template is kept (the bench's KIT floor opens it as the kit does). */
export function kitTemplateFile(): string {
  // Keyed by every migration's text, so a template is current by its name alone: a process
  // starting from one need not ask drizzle's migrator.
  const folder = fileURLToPath(new URL('../../drizzle/', import.meta.url));
  const hash = createHash('sha256').update(TEMPLATE_FORMAT).update(readFileSync(join(folder, 'meta/_journal.json')));
  for (const file of readdirSync(folder).filter((f) => f.endsWith('.sql')).sort()) hash.update(file).update(readFileSync(join(folder, file)));
  // PGlite's entry file stands for its version (its package.json is not exported).
  const pglite = import.meta.resolve('@electric-sql/pglite');
  hash.update(pglite).update(String(statSync(fileURLToPath(pglite)).mtimeMs));
  return join(tmpdir(), `matrix-to-device-kit-${hash.digest('hex').slice(0, 16)}.tar`);
}

async function readTemplate(): Promise<{ tarball: Blob; baseline: Baseline | null } | null> {
  const file = kitTemplateFile();
  let tarball: Blob;
  try {
    tarball = new Blob([await readFile(file)]);
  } catch {
    return null;
  }
  try {
    return { tarball, baseline: JSON.parse(await readFile(`${file}.json`, 'utf8')) as Baseline };
  } catch {
    return { tarball, baseline: null };
  }
}

async function startInstance(): Promise<Instance> {
  // Before the PGlite starts, not after (see importPgliteDrizzle).
  const drivers = importPgliteDrizzle();
  const { PGlite } = await import('@electric-sql/pglite');
  template ??= readTemplate();
  const saved = await template;
  await drivers;
  const raw =
    saved === null
      ? // Little WAL kept past a checkpoint, for a small template (for this run only, not saved in it).
        new PGlite({ postgresqlconf: KIT_POSTGRESQL_CONF, initDbStartParams: INITDB, startParams: [...PGlite.defaultStartParams, '-c', 'min_wal_size=2MB', '-c', 'max_wal_size=4MB'] })
      : new PGlite({ postgresqlconf: KIT_POSTGRESQL_CONF, loadDataDir: saved.tarball });
  try {
    await raw.waitReady;
    if (saved !== null) return { raw, baseline: saved.baseline ?? (await takeBaseline(raw)) };
    await pgliteDatabase(raw, { migrateCore: true, close: async () => {} });
    // The migrator's prepared statements go; the next kit's wrapper names its own from 0.
    await raw.exec('discard all');
    return { raw, baseline: await saveTemplate(raw) };
  } catch (e) {
    await raw.close().catch(() => {});
    throw e;
  }
}

/** Saves a just-migrated instance as the template, with its baseline beside it; returns that baseline. */
async function saveTemplate(raw: PGlite): Promise<Baseline> {
  // PGlite runs in the "postgres" database: template0 and template1 are two thirds of what
  // every start would untar, for a CREATE DATABASE no kit runs. A checkpoint last: an instance
  // started from the tarball then has no WAL to replay.
  for (const name of ['template0', 'template1']) {
    await raw.exec(`alter database ${name} is_template false`);
    // A statement of its own: DROP DATABASE refuses to run in a multi-statement string.
    await raw.exec(`drop database ${name}`);
  }
  // Taken before the tarball, and kept beside it: a hundred milliseconds of every start.
  const baseline = await takeBaseline(raw);
  await raw.exec('checkpoint');
  const tarball = await withoutSpareWal(await raw.dumpDataDir('none'), await walInUse(raw));
  template = Promise.resolve({ tarball, baseline });
  // Each written beside, then renamed, the baseline first: a kit in another process reads whole
  // files or none. Awaited: a test runner may end this process as soon as its tests are done.
  const file = kitTemplateFile();
  const written: string[] = [];
  try {
    for (const [path, data] of [
      [`${file}.json`, JSON.stringify(baseline)],
      [file, new Uint8Array(await tarball.arrayBuffer())],
    ] as const) {
      const partial = `${path}.${process.pid}.partial`;
      written.push(partial);
      await writeFile(partial, data);
      await rename(partial, path);
    }
  } catch {
    // No template on disk: the next process makes its own.
    for (const partial of written) await rm(partial, { force: true }).catch(() => {});
  }
  return baseline;
}

/** The WAL segments a start from this instance's files needs: the one holding the last checkpoint's redo point, and the current one. */
async function walInUse(raw: PGlite): Promise<Set<string>> {
  const { rows } = await raw.query<{ redo: string; current: string }>(`select redo_wal_file as redo, pg_walfile_name(pg_current_wal_lsn()) as current from pg_control_checkpoint()`);
  return new Set(rows.flatMap((r) => [r.redo, r.current]));
}

/**
 * The tarball without the WAL segments kept for reuse (recycled ones, named for positions not yet
 * written): megabytes that every kit would untar and its PostgreSQL never read.
 */
async function withoutSpareWal(tarball: Blob, keep: ReadonlySet<string>): Promise<Blob> {
  if (keep.size === 0) return tarball;
  try {
    const trimmed = tarWithout(new Uint8Array(await tarball.arrayBuffer()), (path) => {
      const segment = /^pg_wal\/([0-9A-F]{24})$/.exec(path)?.[1];
      return segment !== undefined && !keep.has(segment);
    });
    return new Blob([trimmed]);
  } catch {
    // An archive this cannot read (a PGlite that writes another format): kept whole, only larger.
    return tarball;
  }
}

const USER_SCHEMAS = `n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast') and n.nspname not like 'pg\\_temp\\_%' and n.nspname not like 'pg\\_toast\\_temp\\_%'`;

async function takeBaseline(raw: PGlite): Promise<Baseline> {
  const max = await raw.query<{ max: string }>(
    `select greatest((select max(oid::int8) from pg_namespace), (select max(oid::int8) from pg_class), (select max(oid::int8) from pg_type),
       (select max(oid::int8) from pg_proc), (select max(oid::int8) from pg_extension), (select max(oid::int8) from pg_trigger))::text as max`,
  );
  const tables = await raw.query<{ name: string }>(
    `select format('%I.%I', n.nspname, c.relname) as name from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'p') and ${USER_SCHEMAS}`,
  );
  // Tables with rows at the baseline (the migrations journal) keep them.
  const empty: string[] = [];
  for (const { name } of tables.rows) {
    if ((await raw.query(`select 1 from ${name} limit 1`)).rows.length === 0) empty.push(name);
  }
  const literal = (s: string) => `'${s.replaceAll("'", "''")}'`;
  const nonEmpty =
    empty.length === 0 ? `select null::text as name where false` : empty.map((t) => `select ${literal(t)} as name where exists (select 1 from ${t})`).join(' union all ');
  const sequences = await raw.query<{ name: string; last: string | null }>(
    `select format('%I.%I', schemaname, sequencename) as name, last_value::text as last from pg_sequences`,
  );
  return { maxOid: Number((max.rows[0] as { max: string }).max), nonEmpty, sequences: Object.fromEntries(sequences.rows.map((r) => [r.name, r.last])) };
}

/**
 * Empties an instance back to its baseline and keeps it for the next kit, or closes it when
 * that fails. Covers what a module and its test make: rows in the core's tables, and any schema,
 * table, view, sequence, index, type, function, trigger or extension created since; session
 * state (prepared statements, temporary tables, settings, advisory locks) goes with DISCARD ALL.
 */
async function giveBack(instance: Instance): Promise<void> {
  const { raw, baseline } = instance;
  try {
    await raw.exec('discard all');
    const b = baseline.maxOid;
    const drops = await raw.query<{ stmt: string }>(
      `select stmt from (
         select 1 as o, format('drop extension if exists %I cascade', extname) as stmt from pg_extension where oid > ${b}
         union all
         select 2, format('drop schema if exists %I cascade', n.nspname) from pg_namespace n where n.oid > ${b} and ${USER_SCHEMAS}
         union all
         select 3, format('drop trigger if exists %I on %I.%I', t.tgname, n.nspname, c.relname) from pg_trigger t join pg_class c on c.oid = t.tgrelid
           join pg_namespace n on n.oid = c.relnamespace where t.oid > ${b} and not t.tgisinternal and c.oid <= ${b}
         union all
         select 4, format('drop %s if exists %I.%I cascade', case c.relkind when 'v' then 'view' when 'm' then 'materialized view' when 'S' then 'sequence'
             when 'f' then 'foreign table' else 'table' end, n.nspname, c.relname)
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where c.oid > ${b} and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f') and n.oid <= ${b} and ${USER_SCHEMAS}
         union all
         -- Indexes on the core's tables (a new table's go with it; a constraint's with the constraint).
         select 5, format('drop index if exists %I.%I', n.nspname, c.relname) from pg_index i join pg_class c on c.oid = i.indexrelid
           join pg_namespace n on n.oid = c.relnamespace
           where c.oid > ${b} and i.indrelid <= ${b} and ${USER_SCHEMAS} and not exists (select 1 from pg_constraint k where k.conindid = c.oid)
         union all
         select 6, format('drop type if exists %I.%I cascade', n.nspname, t.typname) from pg_type t join pg_namespace n on n.oid = t.typnamespace
           where t.oid > ${b} and n.oid <= ${b} and ${USER_SCHEMAS} and t.typtype in ('e', 'd', 'r', 'c') and t.typelem = 0
             and (t.typtype <> 'c' or (select relkind from pg_class where oid = t.typrelid) = 'c')
         union all
         select 7, format('drop routine if exists %I.%I(%s) cascade', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace where p.oid > ${b} and n.oid <= ${b} and ${USER_SCHEMAS}
       ) s order by o`,
    );
    // Named before any is dropped, so each is still spelled by name; IF EXISTS skips what an
    // earlier CASCADE took along.
    for (const { stmt } of drops.rows) await raw.exec(stmt);
    const used = (await raw.query<{ name: string }>(baseline.nonEmpty)).rows.map((r) => r.name);
    if (used.length > 0) await raw.exec(`truncate ${used.join(', ')}`);
    const now = await raw.query<{ name: string; last: string | null }>(`select format('%I.%I', schemaname, sequencename) as name, last_value::text as last from pg_sequences`);
    for (const { name, last } of now.rows) {
      if (!Object.hasOwn(baseline.sequences, name)) continue;
      const then = baseline.sequences[name] ?? null;
      if (then === last) continue;
      await raw.exec(then === null ? `alter sequence ${name} restart` : `select setval('${name.replaceAll("'", "''")}', ${then})`);
    }
    // drizzle's migrator and the prepared statements of the next kit start afresh.
    await raw.exec('discard all');
  } catch {
    await raw.close().catch(() => {});
    return;
  }
  instance.idleTimer = setTimeout(() => {
    const at = idle.indexOf(instance);
    if (at >= 0) idle.splice(at, 1);
    void raw.close().catch(() => {});
  }, IDLE_MS).unref();
  idle.push(instance);
}

// The methods that reach the database; a kit's handle refuses them once the kit is closed (a
// module's late query would otherwise land in the next kit's database).
const GATED: ReadonlySet<PropertyKey> = new Set(['query', 'sql', 'exec', 'transaction', 'describeQuery', 'execProtocol', 'execProtocolRaw', 'execProtocolRawStream', 'listen', 'runExclusive', 'dumpDataDir']);

function gated(raw: PGlite, isOpen: () => boolean): PGlite {
  return new Proxy(raw, {
    get(target, prop) {
      const value = Reflect.get(target, prop) as unknown;
      if (typeof value !== 'function') return value;
      const method = value as (...a: unknown[]) => unknown;
      if (!GATED.has(prop)) return method.bind(target);
      return (...args: unknown[]) => {
        if (!isOpen()) return Promise.reject(new Error('this test kit is closed: its database was emptied for the next kit'));
        return method.apply(target, args);
      };
    },
  });
}
