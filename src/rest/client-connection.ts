import { ServerResponse } from 'node:http';
import type { Context } from 'hono';
import { abortSignalConnection, type ClientConnection } from '../runtime/long-poll.ts';

/**
 * The connection of the client that made this request, for a long-poll to stop waiting when it
 * closes. Served by @hono/node-server, that is Node's ServerResponse (the `outgoing` binding),
 * watched directly: reading `c.req.raw.signal` instead would make node-server build an
 * AbortController per request, about half a kilobyte more for each parked long-poll. Without a
 * socket (`app.request()` in tests) the request's own AbortSignal stands in.
 */
export function clientConnectionOf(c: Context): ClientConnection {
  return nodeResponseOf(c.env) ?? abortSignalConnection(c.req.raw.signal);
}

/** Node's response in @hono/node-server's bindings (`{incoming, outgoing}`, one object per request); undefined for any other bindings. */
export function nodeResponseOf(env: unknown): ServerResponse | undefined {
  return typeof env === 'object' && env !== null && 'outgoing' in env && env.outgoing instanceof ServerResponse ? env.outgoing : undefined;
}
