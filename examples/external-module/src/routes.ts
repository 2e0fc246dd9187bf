import { and, eq } from 'drizzle-orm';
import { createRouter, MatrixError, type ModuleRoutes } from 'matrix-to-device-server/sdk';
import type { CounterState } from './bump.ts';
import type { CounterConfig } from './config.ts';
import { exampleCounters, type CounterSchema } from './schema.ts';

/** `GET /_matrix/client/unstable/org.example.counter/counters/{name}`: the caller's own counter. */
export const counterRoutes: ModuleRoutes<CounterConfig, CounterState, CounterSchema> = {
  namespace: 'org.example.counter',
  build(ctx) {
    // The server's own router: its errors become Matrix error bodies, whatever hono this package resolved.
    const r = createRouter();
    r.get('/counters/:name', async (c) => {
      const name = c.req.param('name');
      const [row] = await ctx.db
        .select({ count: exampleCounters.count })
        .from(exampleCounters)
        .where(and(eq(exampleCounters.userId, c.get('user').userId), eq(exampleCounters.name, name)));
      if (row === undefined) throw new MatrixError('M_NOT_FOUND', `No counter named ${name}`);
      return c.json({ name, count: row.count });
    });
    return r;
  },
};
