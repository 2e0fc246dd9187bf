import { performance } from 'node:perf_hooks';
import type { Context, MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import type { Logger } from '../logger.ts';
import { HTTP_REQUEST_SECONDS, type Counters } from '../services/counters.ts';
import type { AppEnv } from './env.ts';
import { requestIdSource } from './request-id.ts';

export interface RequestLogOptions {
  log: Logger;
  counters: Counters;
  /** Paths logged at debug rather than info (probes that would drown the log). */
  quietPaths?: readonly string[];
  /**
   * Run before the route (after the request id is set); a response it returns answers the
   * request instead of the route, and is logged like any other. This is how CORS runs: in this
   * middleware's frame rather than one of its own, since each middleware stays suspended for as
   * long as the route takes, and parked long-polls are many and long.
   */
  beforeRoute?: (c: Context<AppEnv>) => Response | undefined;
}

/**
 * Gives each request an id (`requestId` on the context, `X-Request-Id` on the response), then
 * writes one log line when it is answered: id, method, path, status, duration, and the user and
 * device once authenticated. The query string is left out (it may hold `access_token`), and so
 * are bodies. Durations also go to `http_request_duration_seconds{method, route, status}`, by
 * route pattern, so the label values stay few.
 */
export function requestLog(opts: RequestLogOptions): MiddlewareHandler<AppEnv> {
  const quiet = new Set(opts.quietPaths ?? []);
  const nextId = requestIdSource();
  return async (c, next) => {
    const started = performance.now();
    const requestId = nextId();
    c.set('requestId', requestId);
    // Before the route answers, so it is built into the response rather than copied onto it.
    c.header('X-Request-Id', requestId);
    const early = opts.beforeRoute?.(c);
    if (early !== undefined) c.res = early;
    else await next();
    const seconds = (performance.now() - started) / 1000;
    const status = c.res.status;
    opts.counters.observe(HTTP_REQUEST_SECONDS, { method: c.req.method, route: routeOf(c), status: String(status) }, seconds);
    const session = c.get('session') as AppEnv['Variables']['session'] | undefined;
    const fields: Record<string, unknown> = {
      requestId,
      method: c.req.method,
      path: c.req.path,
      status,
      durationMs: Math.round(seconds * 10_000) / 10,
    };
    if (session !== undefined) {
      fields.userId = session.userId;
      if (session.deviceId !== null) fields.deviceId = session.deviceId;
    }
    if (quiet.has(c.req.path)) opts.log.debug('request', fields);
    else opts.log.info('request', fields);
  };
}

/** The pattern of the route that answered (`/_matrix/client/v3/sync`), or `unmatched`. */
function routeOf(c: Context<AppEnv>): string {
  const routes = matchedRoutes(c);
  for (let i = routes.length - 1; i >= 0; i--) {
    const r = routes[i];
    if (r !== undefined && r.method !== 'ALL') return r.path;
  }
  return 'unmatched';
}
