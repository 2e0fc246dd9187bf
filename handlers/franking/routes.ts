import { Hono } from 'hono';
import { intParam, MatrixError, type ModuleRouteEnv, type ModuleRoutes } from '../../src/sdk/index.ts';
import type { FrankingConfig } from './config.ts';
import { PREFIX } from './event-types.ts';
import { ReportStore } from './report-store.ts';
import { reportsPage } from './reports-page.ts';
import type { FrankingState } from './state.ts';

const MAX_LIMIT = 100;

/**
 * The moderators' HTTP endpoint: `GET /_matrix/client/unstable/org.example.franking/reports`.
 * The server has already authenticated the access token; this decides who may read.
 */
export const frankingRoutes: ModuleRoutes<FrankingConfig, FrankingState> = {
  namespace: PREFIX,
  build(ctx) {
    const r = new Hono<ModuleRouteEnv>();
    r.get('/reports', async (c) => {
      const { userId } = c.get('user');
      if (!ctx.config.moderators.includes(userId)) {
        ctx.log.warn('franking report listing refused', { user: userId });
        throw new MatrixError('M_FORBIDDEN', 'Only moderators can list reports');
      }
      const since = intParam(c.req.query('since'), 'since', 0);
      const limit = intParam(c.req.query('limit'), 'limit', 50);
      if (limit < 1 || limit > MAX_LIMIT) throw new MatrixError('M_INVALID_PARAM', `limit must be between 1 and ${MAX_LIMIT}`);
      return c.json(await reportsPage(new ReportStore(ctx.db), since, limit));
    });
    return r;
  },
};
