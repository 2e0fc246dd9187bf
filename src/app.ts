import { Hono } from 'hono';
import { cors } from 'hono/cors';
import type { Config } from './config/config.ts';
import { createLogger, type Logger } from './logger.ts';
import { installErrorHandling } from './rest/errors.ts';
import type { AppEnv } from './rest/env.ts';
import { clientSupportRoutes } from './rest/routes/client-support.ts';
import { devicesRoutes } from './rest/routes/devices.ts';
import { filterRoutes } from './rest/routes/filters.ts';
import { loginRoutes } from './rest/routes/login.ts';
import { registerRoutes } from './rest/routes/register.ts';
import { sendToDeviceRoutes } from './rest/routes/send-to-device.ts';
import { slidingSyncRoutes } from './rest/routes/sliding-sync.ts';
import { syncRoutes } from './rest/routes/sync.ts';
import { versionsRoutes } from './rest/routes/versions.ts';
import { AccountsService } from './services/accounts.ts';
import { Counters } from './services/counters.ts';
import { FiltersService } from './services/filters.ts';
import { Maintenance } from './services/maintenance.ts';
import { Notifier } from './services/notifier.ts';
import type { Services } from './services/services.ts';
import { ToDeviceSyncService } from './services/sync.ts';
import { ToDeviceService } from './services/to-device.ts';
import type { Database } from './storage/database.ts';
import { newOpaqueId } from './services/tokens.ts';
import { ServerUserDispatcher, type HandlerToLoad } from './server-user/dispatcher.ts';

export interface AppDeps {
  config: Config;
  database: Database;
  log?: Logger;
  /** Handler modules, already imported (see loadHandlerModules); none when absent. */
  handlers?: readonly HandlerToLoad[];
}

export interface App {
  /** The Hono application: serve it, or call `app.request()` in tests. */
  app: Hono<AppEnv>;
  services: Services;
  maintenance: Maintenance;
  dispatcher: ServerUserDispatcher;
}

/** Builds the whole server from its config and an open database. Does no I/O by itself. */
export function createApp(deps: AppDeps): App {
  const { config, database } = deps;
  const log = deps.log ?? createLogger('silent');
  const counters = new Counters();
  const notifier = new Notifier();
  const serverUserId = `@:${config.serverName}`;
  const toDevice: ToDeviceService = new ToDeviceService({
    db: database.db,
    serverName: config.serverName,
    notifier,
    counters,
    dispatchToServerUser: (messages): Promise<void> => dispatcher.dispatch(messages),
  });
  const dispatcher: ServerUserDispatcher = new ServerUserDispatcher({
    handlers: deps.handlers ?? [],
    db: database.db,
    log,
    counters,
    serverUserId,
    deadlineMs: config.serverUser.dispatchDeadlineMs,
    send: (userId, deviceId, type, content): Promise<void> => toDevice.sendAsServer(userId, deviceId, type, content),
  });
  const services: Services = {
    config,
    log,
    counters,
    notifier,
    accounts: new AccountsService(database.db, config.serverName),
    toDevice,
    toDeviceSync: new ToDeviceSyncService(database.db, notifier),
    filters: new FiltersService(database.db),
  };

  const app = new Hono<AppEnv>();
  app.use(async (c, next) => {
    c.set('requestId', newOpaqueId(9));
    await next();
  });
  // Web clients (Element, matrix-js-sdk in a browser) need CORS on every client endpoint.
  app.use(
    '/_matrix/*',
    cors({
      origin: '*',
      allowMethods: ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS'],
      allowHeaders: ['X-Requested-With', 'Content-Type', 'Authorization'],
    }),
  );
  installErrorHandling(app, log);

  const client = new Hono<AppEnv>();
  for (const routes of [
    versionsRoutes(),
    registerRoutes(services),
    loginRoutes(services),
    devicesRoutes(services),
    sendToDeviceRoutes(services),
    syncRoutes(services),
    slidingSyncRoutes(services),
    filterRoutes(services),
    clientSupportRoutes(services),
  ]) {
    client.route('/', routes);
  }
  app.route('/_matrix/client', client);

  return { app, services, dispatcher, maintenance: new Maintenance(database.db, config, log) };
}
