import { PGlite } from '@electric-sql/pglite';
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/pglite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../src/storage/drivers/database.ts';
import { openPgliteInMemory } from './support/test-database.ts';
import { withoutRedundantParsers } from '../src/storage/drivers/pglite-parsers.ts';
import { queryRows } from '../src/shared/query-rows.ts';

// The server's PGlite client takes drizzle's raw-text parsers once instead of with every query
// (src/storage/drivers/pglite-parsers.ts); what queries return must not change.
describe('PGlite parsers', () => {
  let d: Database;
  let plain: PGlite;

  beforeAll(async () => {
    d = await openPgliteInMemory();
    plain = new PGlite();
    await plain.waitReady;
  });

  afterAll(async () => {
    await d.close();
    await plain.close();
  });

  const values = sql`select
    '2026-12-02 15:04:05.123456'::timestamp as ts,
    '2026-12-02 15:04:05.123+02'::timestamptz as tstz,
    '1 day 02:03:04'::interval as iv,
    '2026-12-02'::date as dt,
    array[1.5, 2.25]::numeric[] as nums,
    array['2026-12-02 01:02:03'::timestamp] as tss,
    array['2026-12-02 01:02:03+00'::timestamptz] as tstzs,
    array['1 hour'::interval] as ivs,
    array['2026-12-02'::date] as dts,
    42::int as n, 9007199254740993::bigint as big, '{"a": [1, "x"]}'::jsonb as j, true as b, null::text as nothing`;

  it('returns the same values as drizzle on a PGlite client of its own', async () => {
    const ours = await queryRows<Record<string, unknown>>(d.db, values);
    const theirs = await queryRows<Record<string, unknown>>(drizzle(plain) as unknown as Database['db'], values);
    expect(ours).toEqual(theirs);
    // drizzle's choice, kept: dates and times as PostgreSQL's text, not Date objects.
    expect(ours[0]?.tstz).toBe('2026-12-02 13:04:05.123+00');
    expect(ours[0]?.nums).toBe('{1.5,2.25}');
  });

  it('drops only parsers that return the raw text for the types the client already returns raw', () => {
    const raw = (value: string) => value;
    const options = { rowMode: 'array' as const, parsers: { 1114: raw, 1184: raw, 1182: raw } };
    expect(withoutRedundantParsers(options)).toEqual({ rowMode: 'array' });
    const parsing = { parsers: { 1114: (value: string) => new Date(value) } };
    expect(withoutRedundantParsers(parsing)).toBe(parsing);
    const otherType = { parsers: { 25: raw } };
    expect(withoutRedundantParsers(otherType)).toBe(otherType);
    expect(withoutRedundantParsers(undefined)).toBeUndefined();
  });
});
