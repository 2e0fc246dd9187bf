import { Hono } from 'hono';
import type { ServerMetrics } from '../../metrics/server-metrics.ts';
import type { AppEnv } from '../env.ts';

/** `GET /metrics`: the Prometheus text exposition. Served on the metrics listener only. */
export function metricsRoutes(metrics: ServerMetrics): Hono<AppEnv> {
  return new Hono<AppEnv>().get('/metrics', async (c) => {
    const body = await metrics.render();
    return c.body(body, 200, { 'content-type': metrics.contentType });
  });
}
