import { createMiddleware } from 'hono/factory';
import { MatrixError } from '../errors/matrix-error.ts';
import type { AppEnv } from './env.ts';

/**
 * Refuses a request whose path or query carries an encoded NUL (`%00`): it would reach a txn id,
 * an event type, a device or user ID and fail in PostgreSQL, which cannot store NUL in text.
 * The URL is looked at raw, before routing, so every route is covered by this one check. (Lone
 * surrogates cannot come out of a URL: percent-decoding invalid UTF-8 fails and the text is kept
 * as it was written.)
 */
export const refuseNulInUrl = createMiddleware<AppEnv>(async (c, next) => {
  if (c.req.url.includes('%00')) throw new MatrixError('M_INVALID_PARAM', 'The request path or query contains a NUL character (%00)');
  await next();
});
