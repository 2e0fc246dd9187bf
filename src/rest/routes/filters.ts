import { Hono } from 'hono';
import * as v from 'valibot';
import { MatrixError } from '../../errors/matrix-error.ts';
import type { Services } from '../../services/services.ts';
import { requireAuth } from '../auth.ts';
import type { AppEnv } from '../env.ts';
import { readJsonBody } from '../json-body.ts';

const FilterBody = v.record(v.string(), v.unknown());

export function filterRoutes(s: Services): Hono<AppEnv> {
  const r = new Hono<AppEnv>();
  r.use('/v3/user/:userId/filter/*', requireAuth(s));
  r.use('/v3/user/:userId/filter', requireAuth(s));

  const ownUser = (sessionUser: string, pathUser: string) => {
    if (sessionUser !== pathUser) throw new MatrixError('M_FORBIDDEN', 'Cannot access filters of other users');
  };

  r.post('/v3/user/:userId/filter', async (c) => {
    const userId = c.get('session').userId;
    ownUser(userId, c.req.param('userId'));
    const body = await readJsonBody(c, FilterBody, s.config.limits.maxRequestBytes);
    return c.json({ filter_id: await s.filters.create(userId, body) });
  });

  r.get('/v3/user/:userId/filter/:filterId', async (c) => {
    const userId = c.get('session').userId;
    ownUser(userId, c.req.param('userId'));
    return c.json(await s.filters.get(userId, c.req.param('filterId')));
  });

  return r;
}
