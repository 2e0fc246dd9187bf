import { Hono } from 'hono';
import type { Services } from '../../services/services.ts';
import { requireAuth } from '../auth.ts';
import type { AppEnv } from '../env.ts';

/**
 * The few endpoints stock clients (matrix-js-sdk's startClient) call before their first sync.
 * This server has no rooms, so the answers are the honest empty ones.
 */
export function clientSupportRoutes(s: Services): Hono<AppEnv> {
  const r = new Hono<AppEnv>();
  const auth = requireAuth(s);

  const pushRules = { global: { override: [], content: [], room: [], sender: [], underride: [] } };
  // matrix-js-sdk asks for /pushrules/ with the trailing slash.
  r.get('/v3/pushrules', auth, (c) => c.json(pushRules));
  r.get('/v3/pushrules/', auth, (c) => c.json(pushRules));

  r.get('/v3/capabilities', auth, (c) =>
    c.json({
      capabilities: {
        'm.change_password': { enabled: false },
        'm.set_displayname': { enabled: false },
        'm.set_avatar_url': { enabled: false },
        'm.3pid_changes': { enabled: false },
        'm.room_versions': { default: '10', available: { '10': 'stable' } },
      },
    }),
  );

  return r;
}
