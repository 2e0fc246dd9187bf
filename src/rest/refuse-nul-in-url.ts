import { MatrixError } from '../errors/matrix-error.ts';

/**
 * Refuses a request whose path or query carries an encoded NUL (`%00`): it would reach a txn id,
 * an event type, a device or user ID and fail in PostgreSQL, which cannot store NUL in text.
 * The URL is looked at raw, before routing, so every route is covered by this one check. (Lone
 * surrogates cannot come out of a URL: percent-decoding invalid UTF-8 fails and the text is kept
 * as it was written.)
 *
 * Called by the request log before the app (its `beforeRoute`), not installed as a middleware:
 * with any middleware Hono runs every route through `compose`, whose async frames stay suspended
 * for as long as the route takes, and a parked /sync long-poll takes minutes (see request-log.ts).
 */
export function refuseNulInUrl(request: Request): Response | undefined {
  if (!request.url.includes('%00')) return undefined;
  const err = new MatrixError('M_INVALID_PARAM', 'The request path or query contains a NUL character (%00)');
  return Response.json(err.toJSON(), { status: err.status });
}
