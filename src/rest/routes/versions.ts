import { Hono } from 'hono';
import type { AppEnv } from '../env.ts';

export function versionsRoutes(): Hono<AppEnv> {
  return new Hono<AppEnv>().get('/versions', (c) =>
    c.json({
      versions: ['r0.6.1', 'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5', 'v1.6', 'v1.7', 'v1.8', 'v1.9', 'v1.10', 'v1.11', 'v1.12'],
      unstable_features: {
        'org.matrix.msc4246': true,
        'org.matrix.simplified_msc3575': true,
      },
    }),
  );
}
