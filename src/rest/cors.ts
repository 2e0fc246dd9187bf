import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from './env.ts';

/** The headers the Matrix spec (client-server API, "Web Browser Clients") asks for on every response. */
export const CORS_HEADERS: Readonly<Record<string, string>> = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, HEAD, POST, PUT, DELETE, OPTIONS',
  'Access-Control-Allow-Headers': 'X-Requested-With, Content-Type, Authorization',
};

/**
 * CORS for web clients: preflights answered 204, the same three headers on every other answer.
 *
 * Why not hono/cors: it sets headers on `c.res` before the route has answered, so the route's
 * response is then copied into a new one, which turns @hono/node-server's lightweight response
 * into a web-stream-backed one and costs every request a ReadableStream. Headers set with
 * `c.header()` before `next()` are merged into the route's response as it is built.
 */
export function cors(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    for (const [name, value] of Object.entries(CORS_HEADERS)) c.header(name, value);
    if (c.req.method === 'OPTIONS') return c.body(null, 204);
    await next();
    return undefined;
  };
}
