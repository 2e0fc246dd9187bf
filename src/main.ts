import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { serve } from '@hono/node-server';
import { collectDefaultMetrics } from 'prom-client';
import { loadOwnSigningKey } from './federation/own-signing-key.ts';
import { createApp } from './app.ts';
import { createLogger } from './logger.ts';
import { answerClientErrorsAsMatrix } from './rest/client-error-answer.ts';
import { formatProblem, ModuleError } from './sdk/module-errors.ts';
import { HandlerLoadError } from './server-user/dispatcher.ts';
import { DataDirLockedError } from './storage/drivers/data-dir-lock.ts';
import { openDatabase } from './storage/drivers/database.ts';
import { installPostgresJsGuard } from './storage/drivers/postgres-js-guard.ts';
import { prepareStartup, StartupError } from './startup.ts';

async function main(): Promise<void> {
  let prepared;
  try {
    prepared = await prepareStartup();
  } catch (e) {
    if (e instanceof StartupError) {
      console.error(e.message);
      process.exit(1);
    }
    throw e;
  }
  const { config } = prepared;
  // Readable lines for a person at a terminal; one JSON object per line for anything else.
  const log = createLogger(config.log.level, {}, { format: config.log.format ?? (process.stderr.isTTY ? 'pretty' : 'json') });
  installPostgresJsGuard(log);
  const openedAt = performance.now();
  log.info(config.database.kind === 'pglite' ? 'opening the embedded database and applying migrations (a fresh one takes a few seconds)' : 'connecting to PostgreSQL and applying migrations', {
    ...(config.database.kind === 'pglite' ? { dataDir: config.database.dataDir } : {}),
  });
  const database = await openDatabase(
    config.database.kind === 'postgres'
      ? { ...config.database }
      : { kind: 'pglite', dataDir: config.database.dataDir, fsync: config.database.fsync, sharedBuffersMb: config.database.sharedBuffersMb },
  ).catch((e: unknown) => {
    if (!(e instanceof DataDirLockedError)) throw e;
    console.error(e.message);
    process.exit(1);
  });
  log.info('database ready', { ms: Math.round(performance.now() - openedAt) });
  let built;
  try {
    built = createApp({
      config,
      database,
      log,
      handlers: prepared.handlers,
      signingKey: await loadOwnSigningKey(database.db),
      appservices: prepared.appservices,
      ...(prepared.federationCa === undefined ? {} : { federationCa: prepared.federationCa }),
    });
  } catch (e) {
    if (e instanceof HandlerLoadError) {
      console.error(e.message);
      await database.close();
      process.exit(1);
    }
    throw e;
  }
  const { app, maintenance, dispatcher } = built;
  // Handler modules' migrations and setup; cross-process wake-ups; messages queued for other
  // servers and appservices before a restart go out now.
  try {
    await built.start();
  } catch (e) {
    console.error(e instanceof ModuleError ? formatProblem(e) : (e as Error).message);
    await built.stop();
    await database.close();
    process.exit(1);
  }
  log.info('handler modules loaded', { modules: dispatcher.modules });
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
      // A VACUUM under way on PGlite finishes before the database closes.
      maintenance.idle(),
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
