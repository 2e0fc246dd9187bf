import type { Context, Hono } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { MatrixError } from '../errors/matrix-error.ts';
import type { Logger } from '../logger.ts';
import { databaseUnavailableCode, errorCodes } from '../storage/drivers/database-unavailable.ts';
import type { AppEnv } from './env.ts';

export function errorResponse(c: Context, err: MatrixError): Response {
  for (const [name, value] of Object.entries(err.headers)) c.header(name, value);
  return c.json(err.toJSON(), err.status as ContentfulStatusCode);
}

/** The error handler itself, for apps mounted without inheriting it (a module's routes). */
export function matrixErrorHandler(log: Logger): (err: Error, c: Context<AppEnv>) => Response {
  return (err, c) => {
    if (err instanceof MatrixError) return errorResponse(c, err);
    const where = { requestId: c.env?.scope?.requestId, method: c.req.method, path: c.req.path };
    const unavailable = databaseUnavailableCode(err);
    if (unavailable !== null) {
      log.warn('database unavailable', { ...where, code: unavailable, err: String(err) });
      return errorResponse(c, databaseUnavailableError());
    }
    // drizzle's message names the query; the SQLSTATE or socket error is on its cause.
    log.error('unhandled error', { ...where, codes: errorCodes(err), err: String(err), stack: err.stack });
    return errorResponse(c, new MatrixError('M_UNKNOWN', 'Internal server error'));
  };
}

// Long enough for a standby's promotion or a restart, short enough that a client barely notices.
const RETRY_AFTER_S = 2;

/**
 * The database cannot serve now (lost connection, failover, restart). The client may repeat the
 * request as after any failure (a send is idempotent by its transaction ID). The
 * spec has no errcode for a temporary outage, so M_UNKNOWN with 503 and `Retry-After`, as for
 * readiness; `retry_after_ms` too, for clients that only read the body.
 */
export function databaseUnavailableError(): MatrixError {
  return new MatrixError('M_UNKNOWN', 'The database is temporarily unavailable; try again', {
    status: 503,
    headers: { 'Retry-After': String(RETRY_AFTER_S) },
    extra: { retry_after_ms: RETRY_AFTER_S * 1000 },
  });
}

/**
 * Every failure leaves as a Matrix error body: our own errors as they are, an unreachable
 * database as 503 with Retry-After, anything else as 500 M_UNKNOWN with the details in the log only.
 */
export function installErrorHandling(app: Hono<AppEnv>, log: Logger): void {
  app.onError(matrixErrorHandler(log));

  let patterns: { method: string; re: RegExp }[] | null = null;
  app.notFound((c) => {
    // Hono answers an unmatched method like an unknown path; the spec wants 405 for the former.
    patterns ??= app.routes
      .filter((r) => r.method !== 'ALL')
      .map((r) => ({ method: r.method, re: new RegExp(`^${r.path.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/:[^/]+/g, '[^/]+')}$`) }));
    const path = c.req.path;
    const allowed = [...new Set(patterns.filter((p) => p.re.test(path)).map((p) => p.method))];
    if (allowed.length > 0) {
      c.header('Allow', allowed.join(', '));
      return errorResponse(c, new MatrixError('M_UNRECOGNIZED', 'Unrecognized request method', { status: 405 }));
    }
    return errorResponse(c, new MatrixError('M_UNRECOGNIZED', 'Unrecognized request'));
  });
}
