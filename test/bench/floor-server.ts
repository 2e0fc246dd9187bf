/**
 * The floors, each its own server process, started by run.ts:
 *   f1 <port>            bare Hono on @hono/node-server: PUT with a JSON body → parse → `{}`
 *   f2 <port> <url>      the same plus one postgres.js INSERT per request into a one-index table
 *   f3 <port> <dataDir>  the same plus one PGlite INSERT per request (same table), PGlite opened
 *                        as the product's default opens it (durable: fsync on every commit)
 *   f4 <port> <dataDir>  f1 plus a bare PGlite, `new PGlite(dataDir)` with PGlite's default options,
 *                        on a fresh directory: the memory floor of the product on PGlite (M1)
 * f1 also parks `GET /park` requests until `POST /release` (the floor for S5's memory).
 * The route has the shape of sendToDevice (two path parameters, a Bearer header is sent but
 * not checked), the body is read as text and parsed as JSON like the product does.
 */
import { mkdirSync } from 'node:fs';
import { serve } from '@hono/node-server';
import { PGlite } from '@electric-sql/pglite';
import { Hono } from 'hono';
import postgres from 'postgres';
// The product's PGlite storage setup (not its send logic): F3 must pay the same fsync per
// commit as S1 on PGlite, or the ratio between them would compare different durability.
import { pgliteOptions } from '../../src/storage/drivers/pglite-durable.ts';

const [mode, portArg, target] = process.argv.slice(2);
if ((mode !== 'f1' && mode !== 'f2' && mode !== 'f3' && mode !== 'f4') || portArg === undefined || (mode !== 'f1' && target === undefined)) {
  console.error('usage: floor-server.ts f1 <port> | f2 <port> <postgres url> | f3 <port> <pglite data dir> | f4 <port> <pglite data dir>');
  process.exit(2);
}

const CREATE = 'create table if not exists floor_messages (id bigserial primary key, txn_id text not null, body text not null)';

/** One autocommitted INSERT: on F2 a round trip to PostgreSQL, on F3 a PGlite statement and its WAL fsync. */
let insert: ((txnId: string, body: string) => Promise<void>) | null = null;
let close: () => Promise<void> = async () => {};
if (mode === 'f2') {
  // The product's default pool size, so F2 and S1 get the same number of database connections.
  const sql = postgres(target!, { max: 10, onnotice: () => {} });
  await sql.unsafe(CREATE);
  insert = async (txnId, body) => {
    await sql`insert into floor_messages (txn_id, body) values (${txnId}, ${body})`;
  };
  close = () => sql.end({ timeout: 1 });
} else if (mode === 'f3') {
  mkdirSync(target!, { recursive: true });
  // pgliteOptions(dir, true) is what openDatabase uses for the default `pglite_fsync: true`.
  const pg = new PGlite(pgliteOptions(target!, true));
  await pg.waitReady;
  await pg.exec(CREATE);
  insert = async (txnId, body) => {
    await pg.query('insert into floor_messages (txn_id, body) values ($1, $2)', [txnId, body]);
  };
  close = () => pg.close();
} else if (mode === 'f4') {
  // Nothing of the product's: what a newcomer gets from PGlite's README, opened and left idle.
  mkdirSync(target!, { recursive: true });
  const pg = new PGlite(target!);
  await pg.waitReady;
  close = () => pg.close();
}

const app = new Hono();
app.get('/ready', (c) => c.json({}));
// The floor for S5's memory: requests parked like long-polls, until /release answers them all.
const parked: (() => void)[] = [];
app.get('/park', async (c) => {
  await new Promise<void>((resolve) => parked.push(resolve));
  return c.json({});
});
app.post('/release', (c) => {
  const n = parked.length;
  for (const release of parked.splice(0)) release();
  return c.json({ released: n });
});
app.put('/floor/:eventType/:txnId', async (c) => {
  const text = await c.req.text();
  const body = JSON.parse(text) as unknown;
  if (typeof body !== 'object' || body === null) return c.json({ error: 'bad' }, 400);
  if (insert !== null) await insert(c.req.param('txnId'), text);
  return c.json({});
});

const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: Number(portArg) });
const stop = () => {
  server.close();
  void close().then(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
