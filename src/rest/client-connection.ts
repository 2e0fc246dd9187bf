import { ServerResponse } from 'node:http';
import type { Context } from 'hono';
import { abortSignalConnection, type ClientConnection } from '../services/long-poll.ts';

/**
 * The connection of the client that made this request, for a long-poll to stop waiting when it
 * closes. Served by @hono/node-server, that is Node's ServerResponse (the `outgoing` binding),
 * watched directly: reading `c.req.raw.signal` instead would make node-server build an
 * AbortController per request, about half a kilobyte more for each parked long-poll. Without a
 * socket (`app.request()` in tests) the request's own AbortSignal stands in.
 */
export function clientConnectionOf(c: Context): ClientConnection {
  const env: unknown = c.env;
  if (typeof env === 'object' && env !== null && 'outgoing' in env && env.outgoing instanceof ServerResponse) return env.outgoing;
  return abortSignalConnection(c.req.raw.signal);
}
