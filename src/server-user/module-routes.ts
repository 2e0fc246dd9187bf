import { Hono } from 'hono';
import { createMiddleware } from 'hono/factory';
import type { AppserviceRegistry } from '../appservice/registration.ts';
import type { Logger } from '../logger.ts';
import { requireAuth } from '../rest/auth.ts';
import { matrixErrorHandler } from '../rest/errors.ts';
import type { AppEnv } from '../rest/env.ts';
import type { AccountsService } from '../services/accounts.ts';
import type { ModuleRouteEnv } from '../sdk/define-handler.ts';
import type { ModuleProblem } from '../sdk/module-errors.ts';
import type { LoadedModule } from './dispatcher.ts';
import { HandlerLoadError, problem } from './module-checks.ts';

type Env = { Variables: AppEnv['Variables'] & ModuleRouteEnv['Variables'] };

/**
 * The HTTP routes handler modules contribute, each module's under
 * `/unstable/<namespace>/` of the client API, all behind access-token authentication. A `build`
 * that throws stops the server at start like any other module problem.
 */
export function moduleRoutes(loaded: readonly LoadedModule[], auth: { accounts: AccountsService; appservices: AppserviceRegistry }, log: Logger): Hono<AppEnv> {
  const errorHandler = matrixErrorHandler(log);
  const problems: ModuleProblem[] = [];
  const r = new Hono<Env>();
  const authenticated = requireAuth(auth);
  // Modules see a narrow, stable view of the session rather than the server's own type.
  const exposeUser = createMiddleware<Env>(async (c, next) => {
    const { userId, deviceId } = c.get('session');
    c.set('user', { userId, deviceId });
    await next();
  });
  // Namespaces were checked with the rest of the modules (module-checks.ts).
  for (const { module, ctx } of loaded) {
    if (module.routes === undefined) continue;
    const { namespace } = module.routes;
    let app: Hono<ModuleRouteEnv>;
    try {
      app = module.routes.build(ctx);
    } catch (e) {
      problems.push(problem('TDS_ERR_ROUTES_BUILD', `handler module "${module.name}" routes failed to build: ${(e as Error).message}`));
      continue;
    }
    // hono's route() keeps the parent's error handler only for a sub-app of the same copy of
    // hono; a module that resolved a copy of its own would answer its MatrixErrors with that
    // copy's plain-text 500. The server's handler, set on the module's app, answers for it.
    app.onError(errorHandler as unknown as Parameters<typeof app.onError>[0]);
    const base = `/unstable/${namespace}`;
    r.use(`${base}/*`, authenticated, exposeUser);
    r.route(base, app);
  }
  if (problems.length > 0) throw new HandlerLoadError(problems);
  return r as unknown as Hono<AppEnv>;
}
