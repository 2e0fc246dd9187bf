import { createMiddleware } from 'hono/factory';
import { MatrixError } from '../errors/matrix-error.ts';
import type { AccountsService } from '../services/accounts.ts';
import type { AppEnv } from './env.ts';

/** The access token from `Authorization: Bearer` or the deprecated `?access_token=`. */
export function accessTokenOf(authorization: string | undefined, queryToken: string | undefined): string | null {
  if (authorization !== undefined) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (match === null) throw new MatrixError('M_MISSING_TOKEN', 'Invalid Authorization header: expected "Bearer <token>"');
    return match[1] ?? null;
  }
  return queryToken !== undefined && queryToken !== '' ? queryToken : null;
}

/** Requires a valid access token and puts the session on the context. */
export function requireAuth(accounts: AccountsService) {
  return createMiddleware<AppEnv>(async (c, next) => {
    const token = accessTokenOf(c.req.header('authorization'), c.req.query('access_token'));
    if (token === null) throw new MatrixError('M_MISSING_TOKEN', 'Missing access token');
    c.set('session', await accounts.authenticate(token));
    await next();
  });
}
