import { performance } from 'node:perf_hooks';
import type { Hono } from 'hono';
import type { Logger } from '../logger.ts';
import { HTTP_REQUEST_SECONDS, type Counters } from '../metrics/counters.ts';
import { nodeResponseOf } from './client-connection.ts';
import type { AppEnv, RequestScope } from './env.ts';
import { requestIdSource } from './request-id.ts';

export interface RequestLogOptions {
  log: Logger;
  counters: Counters;
  /** Paths logged at debug rather than info (probes that would drown the log). */
  quietPaths?: readonly string[];
  /** Answers a request instead of the app (a CORS preflight); logged like any other answer. */
  beforeRoute?: (request: Request, path: string) => Response | undefined;
  /** Adds headers to every answer (CORS) before it leaves. */
  beforeSend?: (path: string, headers: Headers) => void;
}

/**
 * Gives each request an id (`X-Request-Id` on the response, `scope.requestId` in `c.env`), then
 * writes one log line when it is answered: id, method, path, status, duration, and the user and
 * device once authenticated. The query string is left out (it may hold `access_token`), and so
 * are bodies. Durations also go to `http_request_duration_seconds{method, route, status}`, by
 * route pattern, so the label values stay few.
 *
 * It wraps `app.fetch` (which `app.request` also goes through) rather than being a middleware:
 * with any middleware Hono runs a route through `compose`, and then the router's async frames and
 * the middleware's own stay suspended for as long as the route takes. A parked /sync long-poll
 * takes minutes, and a server holds tens of thousands of them: without a middleware a parked poll
 * costs 2.6 kB less heap. Headers are added to the finished response, which is cheap for Hono's
 * responses (and for @hono/node-server's lightweight ones, which stay lightweight).
 */
export function installRequestLog(app: Hono<AppEnv>, opts: RequestLogOptions): void {
  const quiet = new Set(opts.quietPaths ?? []);
  const nextId = requestIdSource();
  const dispatch = app.fetch;

  const finish = (request: Request, path: string, scope: RequestScope, started: number, answer: Response): Response => {
    const res = withHeaders(answer, path, scope.requestId, opts.beforeSend);
    const seconds = (performance.now() - started) / 1000;
    const status = res.status;
    opts.counters.observe(HTTP_REQUEST_SECONDS, { method: request.method, route: routeOf(app, request.method, path), status: String(status) }, seconds);
    const fields: Record<string, unknown> = { requestId: scope.requestId, method: request.method, path, status, durationMs: Math.round(seconds * 10_000) / 10 };
    const session = scope.session;
    if (session !== undefined) {
      fields.userId = session.userId;
      if (session.deviceId !== null) fields.deviceId = session.deviceId;
    }
    if (quiet.has(path)) opts.log.debug('request', fields);
    else opts.log.info('request', fields);
    return res;
  };

  app.fetch = (request, env?: object, executionCtx?) => {
    const started = performance.now();
    const scope: RequestScope = { requestId: nextId(), session: undefined };
    const path = app.getPath(request);
    const early = opts.beforeRoute?.(request, path);
    if (early !== undefined) return finish(request, path, scope, started, early);
    const answer = dispatch(request, withScope(env, scope), executionCtx);
    return answer instanceof Promise
      ? answer.then(
          (res) => finish(request, path, scope, started, res),
          (err: unknown) => {
            // Hono turns a route's failure into the error handler's answer; this is Hono itself failing.
            opts.log.error('request failed outside the app', { requestId: scope.requestId, method: request.method, path, err: String(err) });
            throw err;
          },
        )
      : finish(request, path, scope, started, answer);
  };
}

/**
 * The bindings the app sees, with the scope. @hono/node-server makes a bindings object per request
 * ({incoming, outgoing}): the scope goes onto it rather than onto a copy, whose shape V8 would
 * make anew for every request. Anything else a caller passes in is copied, never changed.
 */
function withScope(env: object | undefined, scope: RequestScope): { scope: RequestScope } {
  if (env === undefined) return { scope };
  if (nodeResponseOf(env) !== undefined) {
    const bindings: { scope?: RequestScope } = env;
    bindings.scope = scope;
    return bindings as { scope: RequestScope };
  }
  return { ...env, scope };
}

/** The response with the request id and `beforeSend`'s headers; copied first if its headers are immutable (`Response.error()`, a fetched response). */
function withHeaders(res: Response, path: string, requestId: string, beforeSend: RequestLogOptions['beforeSend']): Response {
  try {
    res.headers.set('X-Request-Id', requestId);
  } catch {
    res = new Response(res.body, res);
    res.headers.set('X-Request-Id', requestId);
  }
  beforeSend?.(path, res.headers);
  return res;
}

/** The pattern of the route that answers (`/_matrix/client/v3/sync`), or `unmatched`: the router asked again, after the fact. */
function routeOf(app: Hono<AppEnv>, method: string, path: string): string {
  const [handlers] = app.router.match(method === 'HEAD' ? 'GET' : method, path);
  for (let i = handlers.length - 1; i >= 0; i--) {
    const route = handlers[i]?.[0][1];
    if (route !== undefined && route.method !== 'ALL') return route.path;
  }
  return 'unmatched';
}
