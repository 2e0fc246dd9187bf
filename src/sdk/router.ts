import { Hono } from 'hono';
import type { ModuleRouteEnv } from './define-handler.ts';

/**
 * The router a module's `routes.build` returns, made from the server's own copy of hono: so its
 * types match the server's whatever hono the module resolves, and errors thrown in it reach the
 * server's error handler (a `MatrixError` becomes its Matrix error body). `c.get('user')` is the
 * authenticated user.
 *
 * @since 1.0.0
 */
export type ModuleRouter = Hono<ModuleRouteEnv>;

/** A new, empty module router (see ModuleRouter). @since 1.0.0 */
export function createRouter(): ModuleRouter {
  return new Hono<ModuleRouteEnv>();
}
