import type { PGlite, QueryOptions } from '@electric-sql/pglite';

/**
 * drizzle hands PGlite the same parsers with every query: the raw text, unparsed, for
 * timestamp, timestamptz, interval, date, and the arrays of those and of numeric. PGlite merges
 * per-query parsers into a copy of its whole table (one entry per type, array types included:
 * hundreds) on every query that has them, which cost 85 µs a query here (a `select 1` took
 * 168 µs with drizzle's parsers and 84 µs without; PGlite 0.5, in process). Those parsers are
 * installed on the client once instead, and a query's own are dropped when they are exactly
 * these: the values returned are the same, without the copy.
 */
const RAW_TEXT_TYPES: ReadonlySet<number> = new Set([
  1114, // timestamp
  1184, // timestamptz
  1186, // interval
  1082, // date
  1231, // numeric[]
  1115, // timestamp[]
  1185, // timestamptz[]
  1187, // interval[]
  1182, // date[]
]);

const rawText = (value: string): string => value;

/** Run once the client is ready: PGlite builds its array parsers while it starts. */
export function installRawTextParsers(client: PGlite): void {
  for (const oid of RAW_TEXT_TYPES) client.parsers[oid] = rawText;
}

// Parsers are compared by what they do to this, since drizzle creates new functions per query.
const PROBE = '\u0001raw-text-probe';

/**
 * `options` without its parsers when they are only raw-text parsers for types the client
 * already returns as raw text (see {@link installRawTextParsers}); otherwise unchanged.
 */
export function withoutRedundantParsers(options: QueryOptions | undefined): QueryOptions | undefined {
  const parsers = options?.parsers;
  if (parsers === undefined) return options;
  for (const [oid, parse] of Object.entries(parsers)) {
    if (!RAW_TEXT_TYPES.has(Number(oid)) || parse(PROBE) !== PROBE) return options;
  }
  const { parsers: _dropped, ...rest } = options as QueryOptions;
  return rest;
}
