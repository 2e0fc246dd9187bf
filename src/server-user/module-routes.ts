import { Hono } from 'hono';
import { createMiddleware } from 'hono/factory';
import type { AppserviceRegistry } from '../appservice/registration.ts';
import { requireAuth } from '../rest/auth.ts';
import type { AppEnv } from '../rest/env.ts';
import type { AccountsService } from '../services/accounts.ts';
import type { ModuleRouteEnv } from './define-handler.ts';
import { HandlerLoadError, type LoadedModule } from './dispatcher.ts';

// Reverse-DNS, as Matrix's unstable prefixes are (`org.matrix.msc4244`): at least two labels.
const NAMESPACE = /^[a-z0-9][a-z0-9-]*(\.[a-z0-9_-]+)+$/;

type Env = { Variables: AppEnv['Variables'] & ModuleRouteEnv['Variables'] };

/**
 * The HTTP routes handler modules contribute, each module's under
 * `/unstable/<namespace>/` of the client API, all behind access-token authentication. A bad or
 * duplicate namespace, or a `build` that throws, stops the server at start like any other
 * module problem.
 */
export function moduleRoutes(loaded: readonly LoadedModule[], auth: { accounts: AccountsService; appservices: AppserviceRegistry }): Hono<AppEnv> {
  const problems: string[] = [];
  const owners = new Map<string, string>();
  const r = new Hono<Env>();
  const authenticated = requireAuth(auth);
  // Modules see a narrow, stable view of the session rather than the server's own type.
  const exposeUser = createMiddleware<Env>(async (c, next) => {
    const { userId, deviceId } = c.get('session');
    c.set('user', { userId, deviceId });
    await next();
  });
  for (const { module, ctx } of loaded) {
    if (module.routes === undefined) continue;
    const { namespace } = module.routes;
    if (!NAMESPACE.test(namespace)) {
      problems.push(`handler module "${module.name}" routes namespace "${namespace}" is not a reverse-DNS name like org.example.name`);
      continue;
    }
    const owner = owners.get(namespace);
    if (owner !== undefined) {
      problems.push(`routes namespace "${namespace}" is claimed by both "${owner}" and "${module.name}"`);
      continue;
    }
    owners.set(namespace, module.name);
    let app: Hono<ModuleRouteEnv>;
    try {
      app = module.routes.build(ctx);
    } catch (e) {
      problems.push(`handler module "${module.name}" routes failed to build: ${(e as Error).message}`);
      continue;
    }
    const base = `/unstable/${namespace}`;
    r.use(`${base}/*`, authenticated, exposeUser);
    r.route(base, app);
  }
  if (problems.length > 0) throw new HandlerLoadError(problems);
  return r as unknown as Hono<AppEnv>;
}
