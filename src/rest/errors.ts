import type { Context, Hono } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { MatrixError } from '../errors/matrix-error.ts';
import type { Logger } from '../logger.ts';
import type { AppEnv } from './env.ts';

export function errorResponse(c: Context, err: MatrixError): Response {
  for (const [name, value] of Object.entries(err.headers)) c.header(name, value);
  return c.json(err.toJSON(), err.status as ContentfulStatusCode);
}

/** The error handler itself, for apps mounted without inheriting it (a module's routes). */
export function matrixErrorHandler(log: Logger): (err: Error, c: Context<AppEnv>) => Response {
  return (err, c) => {
    if (err instanceof MatrixError) return errorResponse(c, err);
    log.error('unhandled error', { requestId: c.env?.scope?.requestId, method: c.req.method, path: c.req.path, err: String(err), stack: err.stack });
    return errorResponse(c, new MatrixError('M_UNKNOWN', 'Internal server error'));
  };
}

/**
 * Every failure leaves as a Matrix error body: our own errors as they are, anything else as
 * 500 M_UNKNOWN with the details in the log only.
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
