/**
 * The floors, each its own server process, started by run.ts:
 *   f1 <port>          bare Hono on @hono/node-server: PUT with a JSON body → parse → `{}`
 *   f2 <port> <url>    the same plus one postgres.js INSERT per request into a one-index table
 * f1 also parks `GET /park` requests until `POST /release` (the floor for S5's memory).
 * The route has the shape of sendToDevice (two path parameters, a Bearer header is sent but
 * not checked), the body is read as text and parsed as JSON like the product does.
 */
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import postgres from 'postgres';

const [mode, portArg, url] = process.argv.slice(2);
if ((mode !== 'f1' && mode !== 'f2') || portArg === undefined || (mode === 'f2' && url === undefined)) {
  console.error('usage: floor-server.ts f1 <port> | f2 <port> <postgres url>');
  process.exit(2);
}

// The product's default pool size, so F2 and S1 get the same number of database connections.
const sql = mode === 'f2' ? postgres(url!, { max: 10, onnotice: () => {} }) : null;
if (sql !== null) {
  await sql`create table if not exists floor_messages (id bigserial primary key, txn_id text not null, body text not null)`;
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
  if (sql !== null) await sql`insert into floor_messages (txn_id, body) values (${c.req.param('txnId')}, ${text})`;
  return c.json({});
});

const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: Number(portArg) });
const stop = () => {
  server.close();
  void (sql?.end({ timeout: 1 }) ?? Promise.resolve()).then(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
