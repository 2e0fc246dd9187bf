import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import { MatrixError } from '../errors/matrix-error.ts';
import type { Appservice, AppserviceRegistry } from '../appservice/registration.ts';
import type { AccountsService, Session } from '../services/accounts.ts';
import type { AppEnv } from './env.ts';

/**
 * The access token from `Authorization: Bearer` or the deprecated `?access_token=`. Two
 * different tokens are refused (as Synapse does, 401 M_MISSING_TOKEN) rather than one chosen:
 * which one a proxy, a log or a rate limiter keys on would otherwise differ from the one that
 * acts. The same token in both places is accepted.
 */
export function accessTokenOf(authorization: string | undefined, queryToken: string | undefined): string | null {
  if (authorization !== undefined) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (match === null) throw new MatrixError('M_MISSING_TOKEN', 'Invalid Authorization header: expected "Bearer <token>"');
    const token = match[1] ?? null;
    if (queryToken !== undefined && queryToken !== token) {
      throw new MatrixError('M_MISSING_TOKEN', 'Mixing Authorization headers and access_token query parameters.');
    }
    return token;
  }
  return queryToken !== undefined && queryToken !== '' ? queryToken : null;
}

/**
 * Requires a valid access token and puts the session on the context. An appservice's as_token
 * acts as its sender user, or masquerades as `?user_id=` in its namespace, optionally as one of
 * that user's devices (`device_id`, MSC3202's `org.matrix.msc3202.device_id`).
 */
export function requireAuth(deps: AuthDeps) {
  return createMiddleware<AppEnv>(async (c, next) => {
    c.set('session', await authenticate(c, deps));
    await next();
  });
}

export interface AuthDeps {
  accounts: AccountsService;
  appservices: AppserviceRegistry;
}

/**
 * The session of the request's access token, also given to the request log. Long-poll routes
 * call this from their handler instead of using `requireAuth` (which also puts the session on
 * the context): a middleware stays suspended in `await next()`, with the router's dispatch frames
 * above it, for as long as the poll is parked.
 */
export async function authenticate(c: Context<AppEnv>, { accounts, appservices }: AuthDeps): Promise<Session> {
  const token = accessTokenOf(c.req.header('authorization'), c.req.query('access_token'));
  if (token === null) throw new MatrixError('M_MISSING_TOKEN', 'Missing access token');
  const as = appservices.byAsToken(token);
  const session = as === null ? await accounts.authenticate(token) : await appserviceSession(c.req.query(), as, accounts, appservices);
  const scope = c.env?.scope;
  if (scope !== undefined) scope.session = session;
  return session;
}

async function appserviceSession(query: Record<string, string>, as: Appservice, accounts: AccountsService, registry: AppserviceRegistry): Promise<Session> {
  const userId = query.user_id ?? as.senderUserId;
  if (!registry.owns(as, userId)) {
    throw new MatrixError('M_EXCLUSIVE', 'Application service cannot masquerade as this user (not in its namespaces)');
  }
  if (userId !== as.senderUserId && !(await accounts.userExists(userId))) {
    throw new MatrixError('M_FORBIDDEN', 'Application service has not registered this user');
  }
  const deviceId = query.device_id ?? query['org.matrix.msc3202.device_id'] ?? null;
  if (deviceId !== null && !(await accounts.deviceExists(userId, deviceId))) {
    throw new MatrixError('M_UNKNOWN_DEVICE', 'No such device for this user');
  }
  return { userId, deviceId, appserviceId: as.id };
}

/** The device a request acts for; appservice requests that name none cannot use device endpoints. */
export function deviceOf(session: Session): string {
  if (session.deviceId === null) throw new MatrixError('M_UNKNOWN_DEVICE', 'This request needs a device: pass device_id');
  return session.deviceId;
}
