import { Hono } from 'hono';
import type { Config } from './config/config.ts';
import { createLogger, type Logger } from './logger.ts';
import { corsHeaders, corsPreflight } from './rest/cors.ts';
import { installErrorHandling } from './rest/errors.ts';
import type { AppEnv } from './rest/env.ts';
import { clientSupportRoutes } from './rest/routes/client-support.ts';
import { devicesRoutes } from './rest/routes/devices.ts';
import { keysRoutes } from './rest/routes/keys.ts';
import { dehydratedDeviceRoutes } from './rest/routes/dehydrated-device.ts';
import { DehydratedDevices } from './services/dehydrated-devices.ts';
import { DeviceLists } from './services/device-lists.ts';
import { KeysService } from './services/keys.ts';
import { filterRoutes } from './rest/routes/filters.ts';
import { loginRoutes } from './rest/routes/login.ts';
import { registerRoutes } from './rest/routes/register.ts';
import { sendToDeviceRoutes } from './rest/routes/send-to-device.ts';
import { slidingSyncRoutes } from './rest/routes/sliding-sync.ts';
import { syncRoutes } from './rest/routes/sync.ts';
import { versionsRoutes } from './rest/routes/versions.ts';
import { AccountsService } from './services/accounts.ts';
import { Counters } from './metrics/counters.ts';
import { FiltersService } from './services/filters.ts';
import { Maintenance } from './runtime/maintenance.ts';
import { PgWakeups, WAKE_CHANNEL, type WakeupTiming } from './runtime/pg-wakeups.ts';
import { RateLimiter } from './shared/rate-limiter.ts';
import { newInstanceId, releaseAllLeases, stopTakingLeases, taskLeases } from './runtime/queue-lease.ts';
import type { Services } from './services/services.ts';
import { ToDeviceService } from './services/to-device.ts';
import type { Database, ServerDatabase } from './storage/drivers/database.ts';
import { AppserviceSender } from './appservice/appservice-sender.ts';
import { AppserviceRegistry } from './appservice/registration.ts';
import type { SigningKey } from './shared/ed25519.ts';
import { FederationClient } from './federation/federation-client.ts';
import { ReceiverOrder } from './federation/receiver-order.ts';
import { KEY_FETCH_DEADLINE_MS, RemoteKeys } from './federation/remote-keys.ts';
import { FederationSender } from './federation/sender.ts';
import { ServerDiscovery } from './federation/server-discovery.ts';
import { federationRoutes } from './rest/routes/federation.ts';
import { federationKeysRoutes } from './rest/routes/federation-keys.ts';
import { FederatedKeys } from './services/federated-keys.ts';
import { keyServerRoutes } from './rest/routes/key-server.ts';
import { FederationInbound } from './services/federation-inbound.ts';
import { FederationKeysStore } from './storage/federation-keys-store.ts';
import { ServerUserDispatcher, type HandlerToLoad } from './server-user/dispatcher.ts';
import { KeyAlgorithms } from './services/key-algorithms.ts';
import { ModuleLifecycle } from './server-user/module-lifecycle.ts';
import { moduleRoutes } from './server-user/module-routes.ts';
import { systemClock } from './server-user/system-clock.ts';
import type { Clock } from './sdk/clock.ts';
import { CountingNotifier } from './metrics/counting-notifier.ts';
import { CountingToDeviceSync } from './metrics/counting-sync.ts';
import { ServerMetrics } from './metrics/server-metrics.ts';
import { TimedAppserviceClient } from './metrics/timed-appservice-client.ts';
import { TimedFederationClient } from './metrics/timed-federation-client.ts';
import { installRequestLog } from './rest/request-log.ts';
import { refuseNulInUrl } from './rest/refuse-nul-in-url.ts';
import { healthRoutes } from './rest/routes/health.ts';
import { metricsRoutes } from './rest/routes/metrics.ts';
import { OperationsStore } from './storage/operations-store.ts';
import { DeviceInboxStore } from './storage/device-inbox-store.ts';

export interface AppDeps {
  config: Config;
  database: Database;
  log?: Logger;
  /** Handler modules, already imported (see loadHandlerModules); none when absent. */
  handlers?: readonly HandlerToLoad[];
  /** This server's federation signing key (loadOwnSigningKey); federation is off without it. */
  signingKey?: SigningKey;
  /** Contents of federation.ca_file, read by the caller. */
  federationCa?: string;
  /** Appservice registrations (loadAppserviceRegistrations); none when absent. */
  appservices?: AppserviceRegistry;
  /** Time for rate limits, backoffs, leases, maintenance, the dispatch deadline and modules; a test passes a TestClock. */
  clock?: Clock;
  /** How often processes on one PostgreSQL probe and how long they count each other alive (see PgWakeups); tests shorten it. */
  wakeupTiming?: WakeupTiming;
}

export interface Federation {
  sender: FederationSender;
  /** Transactions to other servers. */
  client: FederationClient;
  /** Keys, version probes and `.well-known`: short requests with a short timeout. */
  lookups: FederationClient;
  keys: RemoteKeys;
  /** Other servers' users' end-to-end encryption keys and device lists. */
  deviceKeys: FederatedKeys;
  /** Key queries and claims: connections of their own, so a slow server never delays transactions. */
  keysClient: FederationClient;
}

export interface App {
  /** The Hono application: serve it, or call `app.request()` in tests. */
  app: Hono<AppEnv>;
  services: Services;
  maintenance: Maintenance;
  dispatcher: ServerUserDispatcher;
  federation: Federation | null;
  appserviceSender: AppserviceSender;
  /** Prometheus metrics of this app (its own registry). */
  metrics: ServerMetrics;
  /** What the metrics listener serves: `GET /metrics`, `/health`, `/health/ready`. */
  metricsApp: Hono<AppEnv>;
  /**
   * Starts what needs I/O: the handler modules (their migrations, then `setup`, in load order),
   * cross-process wake-ups (PostgreSQL LISTEN) and resuming the federation and appservice
   * queues left from before a restart.
   */
  start(): Promise<void>;
  /** Stops background work (senders, their leases, keep-alive sockets), then the handler modules in reverse load order; the database stays open. */
  stop(): Promise<void>;
}

/** Builds the whole server from its config and an open database. Does no I/O by itself. */
export function createApp(deps: AppDeps): App {
  const { config, database } = deps;
  const log = deps.log ?? createLogger('silent');
  const clock = deps.clock ?? systemClock;
  const counters = new Counters();
  const notifier = new CountingNotifier(counters);
  const serverUserId = `@:${config.serverName}`;
  const appservices = deps.appservices ?? new AppserviceRegistry([]);
  const instanceId = newInstanceId();
  const wakeups = database.pg === null ? null : new PgWakeups(database.pg, notifier, log, instanceId, ('listener' in database ? (database as ServerDatabase).listener : null) ?? database.pg, deps.wakeupTiming);
  const appserviceSender = new AppserviceSender({
    db: database.db,
    registry: appservices,
    log,
    counters,
    instanceId,
    backoff: config.federation.backoff,
    clock,
    client: new TimedAppserviceClient(counters),
  });
  const toDevice: ToDeviceService = new ToDeviceService({
    db: database.db,
    serverName: config.serverName,
    notifier,
    counters,
    appservices,
    ...(wakeups === null ? {} : { publishWake: (devices: { userId: string; deviceId: string }[]) => wakeups.publish(devices), wakeInStatement: { channel: WAKE_CHANNEL, from: instanceId, othersMayListen: () => wakeups.othersMayListen() } }),
    onAppserviceQueued: (ids) => {
      for (const id of ids) appserviceSender.wake(id);
    },
    onRemoteQueued: (destinations) => {
      for (const d of destinations) federation?.sender.wake(d);
    },
  });
  const deviceLists = new DeviceLists({
    db: database.db,
    notifier,
    onRemoteQueued: (destinations) => {
      for (const d of destinations) federation?.sender.wake(d);
    },
    ...(wakeups === null ? {} : { publish: (position: number, devices: { userId: string; deviceId: string }[]) => wakeups.publishDeviceLists(position, devices) }),
  });
  const keys = new KeysService({
    db: database.db,
    serverName: config.serverName,
    deviceLists,
    ...(wakeups === null ? {} : { publishCountsChanged: (devices: { userId: string; deviceId: string }[]) => wakeups.publishKeyCountsChanged(devices) }),
  });
  const federation = deps.signingKey !== undefined && config.federation.enabled ? buildFederation(deps, deps.signingKey, log, counters, instanceId, deviceLists) : null;
  if (federation !== null) keys.remote = federation.deviceKeys;
  const dispatcher: ServerUserDispatcher = new ServerUserDispatcher({
    handlers: deps.handlers ?? [],
    dbFor: (schema) => database.withSchema(schema),
    clock,
    deadlineClock: clock,
    leases: taskLeases(database.db, instanceId),
    log,
    counters,
    serverUserId,
    deadlineMs: config.serverUser.dispatchDeadlineMs,
    send: (userId, deviceId, type, content): Promise<void> => toDevice.sendAsServer(userId, deviceId, type, content),
  });
  // The loop service → dispatcher → module → service, closed here and nowhere else.
  toDevice.deliverServerUserMessagesTo(dispatcher);
  keys.algorithms = new KeyAlgorithms(dispatcher.loaded);
  const modules = new ModuleLifecycle(dispatcher.loaded, database, log, { setupMs: config.serverUser.setupDeadlineMs, stopMs: config.serverUser.stopDeadlineMs });
  const accounts = new AccountsService(database.db, config.serverName);
  accounts.devicesChanged = (userId) => deviceLists.changedNow([userId]);
  if (wakeups !== null) {
    accounts.publishRevoked = (hashes) => wakeups.publishRevoked(hashes);
    wakeups.onRevoked = (hashes) => accounts.forgetTokens(hashes);
    wakeups.onDeviceListPosition = (position) => deviceLists.observe(position);
    wakeups.onKeyCountsChanged = (devices) => keys.counts.forget(devices);
    // Parked polls hold no message they could have had: a queued one arrived since they parked.
    wakeups.onNewPeer = () => {
      new DeviceInboxStore(database.db).devicesWithMessages([...notifier.waitingPairs()]).then(
        (devices) => {
          for (const d of devices) notifier.notify(d.userId, d.deviceId);
        },
        (e: unknown) => log.warn('re-reading parked long-polls failed', { err: String(e) }),
      );
    };
    wakeups.onMissedNotifications = () => {
      accounts.forgetAllTokens();
      keys.counts.forgetAll();
      deviceLists.forgetPosition();
    };
  }
  const services: Services = {
    config,
    log,
    counters,
    notifier,
    accounts,
    toDevice,
    toDeviceSync: new CountingToDeviceSync(database.db, notifier, counters),
    filters: new FiltersService(database.db),
    appservices,
    sendToDeviceLimiter: new RateLimiter(config.rateLimits.sendToDevice.perSecond, config.rateLimits.sendToDevice.burstCount, clock),
    keys,
    deviceLists,
    dehydratedDevices: new DehydratedDevices(database.db, accounts, keys),
    keysClaimLimiter: new RateLimiter(config.rateLimits.keysClaim.perSecond, config.rateLimits.keysClaim.burstCount, clock),
  };

  let stopping = false;
  let remotePoll: NodeJS.Timeout | null = null;
  const health = healthRoutes({ checkDatabase: () => new OperationsStore(database.db).inRecovery(), stopping: () => stopping });
  const app = new Hono<AppEnv>();
  installRequestLog(app, {
    log,
    counters,
    quietPaths: ['/health', '/health/ready'],
    beforeRoute: (request, path) => corsPreflight(request, path) ?? refuseNulInUrl(request),
    beforeSend: corsHeaders,
  });
  installErrorHandling(app, log);

  const client = new Hono<AppEnv>();
  for (const routes of [
    versionsRoutes(),
    registerRoutes(services),
    loginRoutes(services),
    devicesRoutes(services),
    sendToDeviceRoutes(services),
    keysRoutes(services),
    dehydratedDeviceRoutes(services),
    syncRoutes(services),
    slidingSyncRoutes(services),
    filterRoutes(services),
    clientSupportRoutes(services),
    moduleRoutes(dispatcher.loaded, services, log),
  ]) {
    client.route('/', routes);
  }
  app.route('/_matrix/client', client);
  app.route('/', health);
  if (federation !== null && deps.signingKey !== undefined) {
    const inbound = new FederationInbound(toDevice, counters, log, federation.deviceKeys);
    app.route('/_matrix/federation', federationRoutes({ services, keys: federation.keys, inbound }));
    app.route('/_matrix/federation', federationKeysRoutes(services, federation.keys));
    app.route('/_matrix/key', keyServerRoutes(config.serverName, deps.signingKey));
  }

  const metrics = new ServerMetrics(counters, notifier, database.db, log);
  const metricsApp = new Hono<AppEnv>();
  installErrorHandling(metricsApp, log);
  metricsApp.route('/', metricsRoutes(metrics));
  metricsApp.route('/', health);

  return {
    app,
    metrics,
    metricsApp,
    services,
    dispatcher,
    federation,
    appserviceSender,
    maintenance: new Maintenance(database.db, config, log, counters, clock, database.kind === 'pglite'),
    async start() {
      await modules.start();
      await wakeups?.start();
      await federation?.sender.resumeAll();
      await appserviceSender.resumeAll();
      const pollS = config.federation.remoteDeviceListPollS;
      if (federation !== null && pollS > 0) {
        remotePoll = setInterval(() => {
          federation.deviceKeys.pollUnsubscribed(pollS * 1000, 100).catch((e: unknown) => log.warn('polling remote device lists failed', { err: String(e) }));
        }, pollS * 1000);
        remotePoll.unref();
      }
    },
    async stop() {
      stopping = true;
      if (remotePoll !== null) clearInterval(remotePoll);
      stopTakingLeases(instanceId);
      await Promise.all([wakeups?.stop(), appserviceSender.stop(), federation?.sender.stop()]);
      await releaseAllLeases(database.db, instanceId).catch((e: unknown) => log.warn('releasing queue leases failed', { err: String(e) }));
      federation?.client.close();
      federation?.lookups.close();
      federation?.keysClient.close();
      await modules.stop();
    },
  };
}

function buildFederation(deps: AppDeps, signingKey: SigningKey, log: Logger, counters: Counters, instanceId: string, deviceLists: DeviceLists): Federation {
  const { config, database } = deps;
  const fed = config.federation;
  let lookups: FederationClient | null = null;
  const discovery = new ServerDiscovery({
    staticRoutes: fed.staticRoutes,
    allowHttp: fed.allowHttp,
    fetchWellKnown: (host) => (lookups as FederationClient).fetchWellKnown(host, fed.allowHttp),
  });
  const clientOptions = {
    serverName: config.serverName,
    signingKey,
    discovery,
    ...(deps.federationCa === undefined ? {} : { extraCa: deps.federationCa }),
  };
  const client = new TimedFederationClient(clientOptions, counters);
  // Short requests (keys, version, .well-known) on connections of their own: an inbound request
  // waiting for its origin's key never queues behind transactions to slow destinations.
  lookups = new FederationClient({ ...clientOptions, timeoutMs: KEY_FETCH_DEADLINE_MS });
  const receiverOrder = new ReceiverOrder(lookups);
  const sender = new FederationSender({ serverName: config.serverName, db: database.db, client, receiverOrder, log, counters, instanceId, backoff: fed.backoff, maxConcurrent: fed.maxConcurrentDestinations, clock: deps.clock ?? systemClock });
  const keysClient = new FederationClient({ ...clientOptions, timeoutMs: 60_000 });
  const deviceKeys = new FederatedKeys({ db: database.db, client: keysClient, deviceLists, log: log.child({ component: 'federated-keys' }) });
  return { sender, client, lookups, keys: new RemoteKeys(new FederationKeysStore(database.db), lookups), deviceKeys, keysClient };
}
