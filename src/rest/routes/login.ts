import { Hono } from 'hono';
import * as v from 'valibot';
import { MatrixError } from '../../errors/matrix-error.ts';
import type { Services } from '../../services/services.ts';
import { requireAuth } from '../auth.ts';
import type { AppEnv } from '../env.ts';
import { readJsonBody } from '../json-body.ts';

const LoginBody = v.object({
  type: v.string(),
  identifier: v.optional(v.object({ type: v.string(), user: v.optional(v.string()) })),
  // Deprecated top-level form, still sent by older clients.
  user: v.optional(v.string()),
  password: v.optional(v.string()),
  device_id: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(255))),
  initial_device_display_name: v.optional(v.pipe(v.string(), v.maxLength(512))),
  refresh_token: v.optional(v.boolean()),
});

export function loginRoutes(s: Services): Hono<AppEnv> {
  const r = new Hono<AppEnv>();
  const auth = requireAuth(s);

  r.get('/v3/login', (c) => c.json({ flows: [{ type: 'm.login.password' }] }));

  r.post('/v3/login', async (c) => {
    const body = await readJsonBody(c, LoginBody, s.config.limits.maxRequestBytes);
    if (body.type !== 'm.login.password') {
      throw new MatrixError('M_UNKNOWN', `Unknown login type ${JSON.stringify(body.type)}`, { status: 400 });
    }
    if (body.identifier !== undefined && body.identifier.type !== 'm.id.user') {
      throw new MatrixError('M_UNKNOWN', `Unknown login identifier type ${JSON.stringify(body.identifier.type)}`, { status: 400 });
    }
    const user = body.identifier?.user ?? body.user;
    if (user === undefined) throw new MatrixError('M_MISSING_PARAM', 'Missing identifier.user');
    if (body.password === undefined) throw new MatrixError('M_MISSING_PARAM', 'Missing password');
    const login = await s.accounts.loginWithPassword({
      user,
      password: body.password,
      deviceId: body.device_id ?? null,
      displayName: body.initial_device_display_name ?? null,
    });
    return c.json({
      user_id: login.userId,
      access_token: login.accessToken,
      device_id: login.deviceId,
      home_server: s.config.serverName,
    });
  });

  r.post('/v3/logout', auth, async (c) => {
    await s.accounts.logout(c.get('session'));
    return c.json({});
  });

  r.post('/v3/logout/all', auth, async (c) => {
    await s.accounts.logoutAll(c.get('session').userId);
    return c.json({});
  });

  r.get('/v3/account/whoami', auth, (c) => {
    const session = c.get('session');
    return c.json({ user_id: session.userId, ...(session.deviceId === null ? {} : { device_id: session.deviceId }), is_guest: false });
  });

  return r;
}
