import { Hono } from 'hono';
import { MatrixError } from '../../errors/matrix-error.ts';
import type { AppEnv } from '../env.ts';

export interface HealthOptions {
  /** Resolves when the database answers a query: true when it is in recovery (a standby, read-only). */
  checkDatabase(): Promise<boolean>;
  /** True once the server is shutting down: readiness fails so load balancers drain it. */
  stopping(): boolean;
  /** How long the database may take to answer before the server counts as not ready. */
  timeoutMs?: number;
}

/**
 * `GET /health`: liveness — the process answers HTTP; no I/O, so a slow database never gets
 * the process restarted. `GET /health/ready`: readiness — the database answers within the
 * timeout, accepts writes (not a standby in recovery) and the server is not shutting down; else
 * `503` with a Matrix error body.
 */
export function healthRoutes(opts: HealthOptions): Hono<AppEnv> {
  const timeoutMs = opts.timeoutMs ?? 2_000;
  return new Hono<AppEnv>()
    .get('/health', (c) => c.json({ status: 'ok' }))
    .get('/health/ready', async (c) => {
      if (opts.stopping()) throw new MatrixError('M_UNKNOWN', 'Shutting down', { status: 503 });
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
      try {
        const result = await Promise.race([opts.checkDatabase().then((inRecovery) => (inRecovery ? ('standby' as const) : ('ok' as const))), timeout]);
        if (result === 'timeout') throw new MatrixError('M_UNKNOWN', 'The database did not answer in time', { status: 503 });
        // Connected to a standby (e.g. the old primary came back as one): writes would all fail.
        if (result === 'standby') throw new MatrixError('M_UNKNOWN', 'The database is a standby in recovery (read-only)', { status: 503 });
      } catch (e) {
        if (e instanceof MatrixError) throw e;
        throw new MatrixError('M_UNKNOWN', 'The database is not available', { status: 503 });
      } finally {
        clearTimeout(timer);
      }
      return c.json({ status: 'ready' });
    });
}
