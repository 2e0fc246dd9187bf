import type { Context } from 'hono';
import type { AppEnv } from './env.ts';

/** The headers the Matrix spec (client-server API, "Web Browser Clients") asks for on every response. */
export const CORS_HEADERS: Readonly<Record<string, string>> = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, HEAD, POST, PUT, DELETE, OPTIONS',
  'Access-Control-Allow-Headers': 'X-Requested-With, Content-Type, Authorization',
};

/**
 * CORS for web clients, before the route runs: the three headers on every answer, and the
 * answer to a preflight (204), which the route is then not asked for; undefined otherwise.
 *
 * Why not hono/cors: it sets headers on `c.res` before the route has answered, so the route's
 * response is then copied into a new one, which turns @hono/node-server's lightweight response
 * into a web-stream-backed one and costs every request a ReadableStream. Headers set with
 * `c.header()` before the route are merged into its response as it is built.
 *
 * Why not a middleware of its own: it runs inside the request log's (see requestLog's
 * `beforeRoute`), because every middleware stays suspended in `await next()` for as long as the
 * route takes, and a parked /sync long-poll takes minutes: one frame fewer per parked request.
 */
export function cors(c: Context<AppEnv>): Response | undefined {
  for (const [name, value] of Object.entries(CORS_HEADERS)) c.header(name, value);
  return c.req.method === 'OPTIONS' ? c.body(null, 204) : undefined;
}
