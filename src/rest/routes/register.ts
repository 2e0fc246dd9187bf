import { Hono, type Context } from 'hono';
import { accessTokenOf } from '../auth.ts';
import * as v from 'valibot';
import { MatrixError } from '../../errors/matrix-error.ts';
import { newOpaqueId } from '../../crypto/tokens.ts';
import type { Services } from '../../services/services.ts';
import type { AppEnv } from '../env.ts';
import { readJsonBody } from '../json-body.ts';

const RegisterBody = v.object({
  // m.login.application_service: an appservice registering a user in its namespace.
  type: v.optional(v.string()),
  username: v.optional(v.string()),
  password: v.optional(v.pipe(v.string(), v.maxLength(512, 'password is longer than 512 characters'))),
  device_id: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(255))),
  initial_device_display_name: v.optional(v.pipe(v.string(), v.maxLength(512))),
  inhibit_login: v.optional(v.boolean()),
  refresh_token: v.optional(v.boolean()),
  auth: v.optional(v.object({ type: v.optional(v.string()), session: v.optional(v.string()) })),
});

export function registerRoutes(s: Services): Hono<AppEnv> {
  const r = new Hono<AppEnv>();

  r.get('/v3/register/available', async (c) => {
    const username = c.req.query('username');
    // As Synapse: with registration closed, do not let anyone probe which users exist.
    if (!s.config.registrationEnabled) throw new MatrixError('M_FORBIDDEN', 'Registration has been disabled');
    if (username === undefined || username === '') throw new MatrixError('M_MISSING_PARAM', 'Missing username');
    if (!(await s.accounts.isUsernameAvailable(username))) throw new MatrixError('M_USER_IN_USE', 'User ID already taken');
    if (s.appservices.exclusiveOwner(`@${username}:${s.config.serverName}`) !== null) {
      throw new MatrixError('M_EXCLUSIVE', 'This user ID is reserved by an application service', { status: 400 });
    }
    return c.json({ available: true });
  });

  r.post('/v3/register', async (c) => {
    if (c.req.query('kind') === 'guest') {
      throw new MatrixError('M_GUEST_ACCESS_FORBIDDEN', 'Guest access is not supported');
    }
    const body = await readJsonBody(c, RegisterBody, s.config.limits.maxRequestBytes);
    if (body.type === 'm.login.application_service') return registerForAppservice(c, s, body);
    if (!s.config.registrationEnabled) throw new MatrixError('M_FORBIDDEN', 'Registration has been disabled');
    if (body.username !== undefined && s.appservices.exclusiveOwner(`@${body.username}:${s.config.serverName}`) !== null) {
      throw new MatrixError('M_EXCLUSIVE', 'This user ID is reserved by an application service', { status: 400 });
    }
    // Report a bad or taken username before asking for auth, as clients expect.
    if (body.username !== undefined && !(await s.accounts.isUsernameAvailable(body.username))) {
      throw new MatrixError('M_USER_IN_USE', 'User ID already taken');
    }
    if (body.auth === undefined) {
      throw new MatrixError('M_UNAUTHORIZED', 'Complete the m.login.dummy stage', {
        extra: { flows: [{ stages: ['m.login.dummy'] }], params: {}, session: newOpaqueId() },
      });
    }
    if (body.auth.type !== 'm.login.dummy') {
      throw new MatrixError('M_UNRECOGNIZED', `Unsupported auth type ${JSON.stringify(body.auth.type)}; use m.login.dummy`, { status: 400 });
    }
    if (body.password === undefined) throw new MatrixError('M_MISSING_PARAM', 'Missing password');
    const result = await s.accounts.register({
      localpart: body.username ?? null,
      password: body.password,
      deviceId: body.device_id ?? null,
      displayName: body.initial_device_display_name ?? null,
      inhibitLogin: body.inhibit_login === true,
    });
    if (result.login === null) return c.json({ user_id: result.userId });
    return c.json({
      user_id: result.userId,
      access_token: result.login.accessToken,
      device_id: result.login.deviceId,
      home_server: s.config.serverName,
    });
  });

  return r;
}

/** Spec "Server admin style permissions": registration with the appservice's as_token. */
async function registerForAppservice(c: Context<AppEnv>, s: Services, body: v.InferOutput<typeof RegisterBody>): Promise<Response> {
  const token = accessTokenOf(c.req.header('authorization'), c.req.query('access_token'));
  if (token === null) throw new MatrixError('M_MISSING_TOKEN', 'm.login.application_service needs the appservice as_token');
  const as = s.appservices.byAsToken(token);
  if (as === null) throw new MatrixError('M_UNKNOWN_TOKEN', 'Unrecognised appservice token');
  if (body.username === undefined) throw new MatrixError('M_MISSING_PARAM', 'Missing username');
  const userId = `@${body.username}:${s.config.serverName}`;
  if (!s.appservices.owns(as, userId)) throw new MatrixError('M_EXCLUSIVE', 'User ID is not in the appservice\'s namespaces');
  const result = await s.accounts.registerForAppservice(body.username, body.device_id ?? null, body.inhibit_login === true);
  if (result.login === null) return c.json({ user_id: result.userId });
  return c.json({ user_id: result.userId, access_token: result.login.accessToken, device_id: result.login.deviceId, home_server: s.config.serverName });
}
