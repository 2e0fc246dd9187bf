import type { PGlite, QueryOptions, Results, Transaction } from '@electric-sql/pglite';
import { withoutRedundantParsers } from './pglite-parsers.ts';

/**
 * PGlite parses, analyses and plans every parameterised query again: its `query()` sends an
 * unnamed Parse each time. For this server's group-commit statement (a dozen CTEs) that was
 * 1.7 ms of the main thread per statement against 0.33 ms run as a prepared statement (measured
 * in process on PGlite 0.3, fsync off), and since PGlite runs on the main thread it is time no
 * request is served. On PostgreSQL postgres.js prepares (prepared-statements.ts); this is the
 * same for PGlite, so both databases run the same SQL the same way.
 *
 * PGlite has one session, so a statement prepared once (`PREPARE name AS text`) serves every
 * later query of the same text, in or out of a transaction (a prepared statement outlives a
 * rollback). Its parameters go as literals in `EXECUTE name(…)`: EXECUTE takes no bind
 * parameters. Only texts with 1 to MAX_PARAMETERS parameters, all strings, numbers, booleans,
 * bigints or null, are prepared; anything else (objects PGlite would serialise itself, a string
 * with NUL) runs as before.
 */
const MAX_PARAMETERS = 64;
/** Distinct texts kept prepared; the oldest is deallocated beyond this. */
const MAX_STATEMENTS = 500;
/** Texts PREPARE refused (parameter types it cannot infer): run unprepared, not tried again. */
const MAX_REFUSED = 500;

interface Prepared {
  readonly names: Map<string, string>;
  readonly refused: Set<string>;
  next: number;
}

type Queryable = Pick<PGlite | Transaction, 'query'>;

/** Wraps a PGlite client (and its transactions) so parameterised queries run prepared. */
export function withPglitePrepared(client: PGlite): PGlite {
  const state: Prepared = { names: new Map(), refused: new Set(), next: 0 };
  return new Proxy(client, {
    get(target, prop) {
      if (prop === 'query') return <T>(text: string, params?: unknown[], options?: QueryOptions) => runQuery<T>(target, state, text, params, options);
      if (prop === 'transaction') {
        return <T>(fn: (tx: Transaction) => Promise<T>) => target.transaction((tx) => fn(wrapTransaction(tx, state)));
      }
      const value = Reflect.get(target, prop) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

function wrapTransaction(tx: Transaction, state: Prepared): Transaction {
  return new Proxy(tx, {
    get(target, prop) {
      if (prop === 'query') return <T>(text: string, params?: unknown[], options?: QueryOptions) => runQuery<T>(target, state, text, params, options);
      const value = Reflect.get(target, prop) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

async function runQuery<T>(db: Queryable, state: Prepared, text: string, params: unknown[] | undefined, given: QueryOptions | undefined): Promise<Results<T>> {
  const options = withoutRedundantParsers(given);
  const literals = params === undefined || state.refused.has(text) ? null : asLiterals(params);
  if (literals === null) return db.query<T>(text, params, options);
  let name = state.names.get(text);
  if (name === undefined) {
    const candidate = `tds_prepared_${state.next++}`;
    try {
      await db.query(`prepare ${candidate} as ${text}`);
    } catch (e) {
      // A text PostgreSQL cannot prepare (a parameter's type it cannot infer) runs unprepared
      // from now on; any other failure (an aborted transaction) is the query's own to report.
      if (isSemanticError(e) && state.refused.size < MAX_REFUSED) state.refused.add(text);
      return db.query<T>(text, params, options);
    }
    name = candidate;
    state.names.set(text, name);
    if (state.names.size > MAX_STATEMENTS) {
      const [oldText, oldName] = state.names.entries().next().value as [string, string];
      state.names.delete(oldText);
      await db.query(`deallocate ${oldName}`).catch(() => {});
    }
  }
  try {
    return await db.query<T>(`execute ${name}(${literals.join(', ')})`, [], options);
  } catch (e) {
    // A migration changed a table a cached plan returns rows of: prepare the text afresh.
    if ((e as { code?: string }).code === '0A000' && /cached plan/.test(String(e))) {
      state.names.delete(text);
      await db.query(`deallocate ${name}`).catch(() => {});
      return db.query<T>(text, params, options);
    }
    throw e;
  }
}

/** The parameters as SQL literals (typed by the prepared statement), or null if one cannot be. */
function asLiterals(params: readonly unknown[]): string[] | null {
  if (params.length === 0 || params.length > MAX_PARAMETERS) return null;
  const out: string[] = [];
  for (const p of params) {
    if (p === null || p === undefined) out.push('NULL');
    else if (typeof p === 'string') {
      if (p.includes('\u0000')) return null;
      // standard_conforming_strings is on: only the quote needs doubling.
      out.push(`'${p.replaceAll("'", "''")}'`);
    } else if (typeof p === 'number' || typeof p === 'bigint' || typeof p === 'boolean') out.push(`'${String(p)}'`);
    else return null;
  }
  return out;
}

/** SQLSTATE class 42: syntax error or access rule violation (e.g. 42P18, indeterminate datatype). */
function isSemanticError(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && code.startsWith('42');
}
