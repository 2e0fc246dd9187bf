import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { serve } from '@hono/node-server';
import { collectDefaultMetrics } from 'prom-client';
import { loadOwnSigningKey } from './federation/own-signing-key.ts';
import { loadAppserviceRegistrations } from './appservice/load-registrations.ts';
import { AppserviceConfigError } from './appservice/registration.ts';
import { createApp } from './app.ts';
import { ConfigError, loadConfig } from './config/config.ts';
import { createLogger } from './logger.ts';
import { answerClientErrorsAsMatrix } from './rest/client-error-answer.ts';
import { HandlerLoadError } from './server-user/dispatcher.ts';
import { loadHandlerModules } from './server-user/loader.ts';
import { DataDirLockedError } from './storage/data-dir-lock.ts';
import { openDatabase } from './storage/database.ts';
import { installPostgresJsGuard } from './storage/postgres-js-guard.ts';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(e.message);
      process.exit(1);
    }
    throw e;
  }
  const log = createLogger(config.log.level, {}, { format: config.log.format });
  installPostgresJsGuard(log);
  const database = await openDatabase(
    config.database.kind === 'postgres'
      ? { kind: 'postgres', url: config.database.url, poolSize: config.database.poolSize, preparedStatements: config.database.preparedStatements }
      : { kind: 'pglite', dataDir: config.database.dataDir, fsync: config.database.fsync },
  ).catch((e: unknown) => {
    if (!(e instanceof DataDirLockedError)) throw e;
    console.error(e.message);
    process.exit(1);
  });
  let built;
  try {
    built = createApp({
      config,
      database,
      log,
      handlers: await loadHandlerModules(config.handlers),
      signingKey: await loadOwnSigningKey(database.db),
      appservices: loadAppserviceRegistrations(config.appservices, config.serverName),
      ...(config.federation.caFile === null ? {} : { federationCa: readFileSync(config.federation.caFile, 'utf8') }),
    });
  } catch (e) {
    if (e instanceof HandlerLoadError || e instanceof AppserviceConfigError) {
      console.error(e.message);
      await database.close();
      process.exit(1);
    }
    throw e;
  }
  const { app, maintenance, dispatcher } = built;
  log.info('handler modules loaded', { modules: dispatcher.modules });
  // Cross-process wake-ups; messages queued for other servers and appservices before a restart go out now.
  await built.start();
  maintenance.start();
  const server = serve({ fetch: app.fetch, hostname: config.listen.host, port: config.listen.port }, (info) => {
    log.info('listening', {
      url: `http://${config.listen.host}:${info.port}`,
      serverName: config.serverName,
      database: config.database.kind,
      registration: config.registrationEnabled,
    });
  });

  // Prometheus metrics (and the health checks) on a listener of their own. Not being able to
  // open it is logged, not fatal: the server itself works without it.
  collectDefaultMetrics({ register: built.metrics.registry });
  const metricsServer = !config.metrics.enabled
    ? null
    : serve({ fetch: built.metricsApp.fetch, hostname: config.metrics.host, port: config.metrics.port }, (info) =>
        log.info('metrics listening', { url: `http://${config.metrics.host}:${info.port}/metrics` }),
      );
  metricsServer?.on('error', (e: Error) => log.error('metrics listener failed; serving without metrics', { host: config.metrics.host, port: config.metrics.port, err: String(e) }));

  const fedListen = config.federation.enabled ? config.federation.listen : null;
  const fedServer =
    fedListen === null
      ? null
      : serve(
          {
            fetch: app.fetch,
            hostname: fedListen.host,
            port: fedListen.port,
            ...(fedListen.tlsCert !== null && fedListen.tlsKey !== null
              ? { createServer: createHttpsServer, serverOptions: { cert: readFileSync(fedListen.tlsCert), key: readFileSync(fedListen.tlsKey) } }
              : {}),
          },
          (info) => log.info('federation listening', { port: info.port, tls: fedListen.tlsCert !== null }),
        );

  for (const listener of [server, metricsServer, fedServer]) if (listener !== null) answerClientErrorsAsMatrix(listener);

  // Graceful shutdown: stop accepting, let in-flight requests finish (long-polls are told to
  // answer now), stop background senders, then close the database pool.
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('shutting down', { signal });
    maintenance.stop();
    const stopped = built.stop();
    const closed = Promise.all([
      stopped,
      new Promise<void>((resolve) => server.close(() => resolve())),
      new Promise<void>((resolve) => (fedServer === null ? resolve() : fedServer.close(() => resolve()))),
      new Promise<void>((resolve) => (metricsServer === null || !metricsServer.listening ? resolve() : metricsServer.close(() => resolve()))),
    ]);
    built.services.notifier.wakeAll();
    void closed
      .then(() => database.close())
      .then(
        () => {
          log.info('stopped');
          process.exit(0);
        },
        (e: unknown) => {
          log.error('shutdown failed', { err: String(e) });
          process.exit(1);
        },
      );
    setTimeout(() => {
      log.warn('in-flight requests did not finish in 10 s; exiting');
      process.exit(1);
    }, 10_000).unref();
  };
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.once('SIGTERM', () => shutdown('SIGTERM'));
}

main().catch((e: unknown) => {
  console.error('fatal:', e instanceof Error ? e.message : e);
  process.exit(1);
});
