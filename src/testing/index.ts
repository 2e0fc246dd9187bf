/**
 * `matrix-to-device-server/testing`: runs one handler module in isolation, the way the server
 * runs it — content validated by its schemas, its config by its config schema, its migrations
 * applied, `setup` before the first event and `stop` at `close()`, the dispatch deadline and
 * `ctx.signal`, the same checks on what it sends — on an in-memory database, with what it sends
 * recorded instead of delivered, and a clock the test drives. In the spirit of Hono's
 * `app.request()`: no ports, no sockets, no /sync.
 *
 *   const kit = await testModule(myModule, { config: { greeting: 'hi' } });
 *   const { outcome, sent } = await kit.deliver('org.example.hello', { name: 'alice' });
 *   expect(sent).toEqual([{ userId: '@alice:test.local', deviceId: 'ALICEDEVICE', type: 'org.example.hi', content: { … } }]);
 *   await kit.close();
 */
import { randomBytes } from 'node:crypto';
import { Hono } from 'hono';
import { createMiddleware } from 'hono/factory';
import { createLogger } from '../logger.ts';
import { installErrorHandling } from '../rest/errors.ts';
import type { AppEnv } from '../rest/env.ts';
import type { Db, HandlerModule, Logger, ModuleRouteEnv, Origin } from '../sdk/define-handler.ts';
import { Counters } from '../metrics/counters.ts';
import { taskLeases } from '../runtime/queue-lease.ts';
import type { Database } from '../storage/drivers/database.ts';
import { ServerUserDispatcher, type DispatchOutcome } from '../server-user/dispatcher.ts';
import { importHandlerModules, shapeProblems } from '../server-user/loader.ts';
import { checkModules, HandlerLoadError } from '../server-user/module-checks.ts';
import { ModuleLifecycle } from '../server-user/module-lifecycle.ts';
import { kitDatabase } from './kit-database.ts';
import { TestClock } from './test-clock.ts';

export type { DispatchOutcome } from '../server-user/dispatcher.ts';
export type { Database } from '../storage/drivers/database.ts';
export { TestClock } from './test-clock.ts';

/** @since 1.0.0 */
export interface TestModuleOptions {
  /** The module's block of the server config, raw: validated by the module's schema as at start. */
  config?: unknown;
  /** Default `test.local`; the server user is `@:<serverName>`. */
  serverName?: string;
  /** `server_user.dispatch_deadline_ms`; default 5000. */
  deadlineMs?: number;
  /** `server_user.setup_deadline_ms`; default 30000. */
  setupDeadlineMs?: number;
  /** `server_user.stop_deadline_ms`; default 10000. */
  stopDeadlineMs?: number;
  /**
   * A database to run on (it stays open at `close()`), e.g. `openDatabase({ kind: 'postgres', … })`
   * to test on PostgreSQL. Two kits on one database are two server processes of one deployment
   * (`deployment` periodic tasks run on one of them). Default: an in-memory PGlite holding the
   * core's tables and nothing else, emptied at `close()` for the next kit of the process.
   */
  database?: Database;
  /** Where the module's log lines go; default nowhere. */
  log?: Logger;
  /** The clock the module sees; default a new TestClock at the current time. */
  clock?: TestClock;
  /** When the module is given by name or path: where to look it up, as the server's working directory. Default `process.cwd()`. */
  cwd?: string;
}

/** One message the module sent (as `@:<serverName>`). @since 1.0.0 */
export interface SentMessage {
  userId: string;
  /** A device ID, or `*` for every device of the user. */
  deviceId: string;
  type: string;
  content: Record<string, unknown>;
}

/** Who an event comes from; by default a local client, `@alice:<serverName>` on device `ALICEDEVICE`. @since 1.0.0 */
export interface DeliverOptions {
  sender?: string;
  /** Default `ALICEDEVICE`, or null for `origin: 'federation'` (federation names no device). */
  senderDevice?: string | null;
  origin?: Origin;
}

/** @since 1.0.0 */
export interface Delivery {
  /** How the dispatch ended: `handled`, `error`, `timeout`, `invalid_content` or `unknown_type`. */
  outcome: DispatchOutcome;
  /** What the module sent while handling this event (until it finished or the deadline passed). */
  sent: SentMessage[];
}

/** Whom a route request is authenticated as; default `@alice:<serverName>` on `ALICEDEVICE`. @since 1.0.0 */
export interface RequestAs {
  userId?: string;
  /** Null: an appservice acting as the user without naming a device. */
  deviceId?: string | null;
}

/** A running module under test: what `testModule` returns. @since 1.0.0 */
export interface ModuleTester {
  /** Dispatches one event to the server user, as a request to `/sendToDevice` would. */
  deliver(type: string, content: Record<string, unknown>, opts?: DeliverOptions): Promise<Delivery>;
  /** Everything the module has sent so far, across deliveries, `setup` and periodic tasks. */
  readonly sent: readonly SentMessage[];
  /** The module's database (typed without the module's schema; import your tables to query it). */
  readonly db: Db;
  readonly serverUserId: string;
  /** The module's clock: `await kit.clock.advance(ms)` fires its timers and periodic tasks. */
  readonly clock: TestClock;
  /**
   * Calls the module's HTTP routes (a path relative to its namespace, e.g. `/reports?limit=5`)
   * as an authenticated user; errors come back as the server would answer them.
   */
  request(path: string, init?: RequestInit, as?: RequestAs): Promise<Response>;
  /**
   * Stops the module as shutdown does (tasks, in-flight handlers, `stop`). A database the kit
   * chose is then emptied (the module's tables and the rows of the core's dropped) and kept for
   * the next kit in this process; `db` refuses queries from then on. A given `database` stays
   * as it is, open.
   */
  close(): Promise<void>;
}

/**
 * Runs one handler module as the server would: given as the module itself, or by the name or
 * path a server config would give it (looked up the same way, with the same messages). Every
 * check that needs no database — config, SDK range, shape, migrations folder — runs first, so a
 * refusal is quick and throws the server's HandlerLoadError (`problems`, each with its code).
 *
 * @since 1.0.0
 */
export async function testModule<Config, State, Schema extends Record<string, unknown>>(
  module: HandlerModule<Config, State, Schema> | string,
  opts: TestModuleOptions = {},
): Promise<ModuleTester> {
  let resolved: HandlerModule<unknown, unknown>;
  if (typeof module === 'string') {
    const imported = await importHandlerModules([{ module }], opts.cwd ?? process.cwd());
    if (imported.problems.length > 0) throw new HandlerLoadError(imported.problems);
    resolved = (imported.handlers[0] as { module: HandlerModule<unknown, unknown> }).module;
  } else {
    resolved = module as unknown as HandlerModule<unknown, unknown>;
    const shape = shapeProblems(resolved.name, resolved);
    if (shape.length > 0) throw new HandlerLoadError(shape);
  }
  const handlers = [{ module: resolved, config: opts.config }];
  const checked = checkModules(handlers);
  if (checked.problems.length > 0) throw new HandlerLoadError(checked.problems);

  const serverName = opts.serverName ?? 'test.local';
  const serverUserId = `@:${serverName}`;
  const log = opts.log ?? createLogger('silent');
  const clock = opts.clock ?? new TestClock();
  const database = opts.database ?? (await kitDatabase());
  const sent: SentMessage[] = [];
  const listeners = new Set<(m: SentMessage) => void>();
  const closeOwned = async (): Promise<void> => {
    if (opts.database === undefined) await database.close();
  };
  let dispatcher: ServerUserDispatcher;
  try {
    dispatcher = new ServerUserDispatcher({
      handlers,
      dbFor: (schema) => database.withSchema(schema),
      clock,
      leases: taskLeases(database.db, `kit-${randomBytes(6).toString('hex')}`),
      log,
      counters: new Counters(null),
      serverUserId,
      deadlineMs: opts.deadlineMs ?? 5000,
      send: async (userId, deviceId, type, content) => {
        const message = { userId, deviceId, type, content: structuredClone(content) };
        sent.push(message);
        for (const listener of listeners) listener(message);
      },
    });
  } catch (e) {
    await closeOwned();
    throw e;
  }
  const loaded = dispatcher.loaded[0];
  clock.settle = async () => {
    await loaded?.runtime.tasks.idle();
    await new Promise((resolve) => setImmediate(resolve));
  };
  const lifecycle = new ModuleLifecycle(dispatcher.loaded, database, log, { setupMs: opts.setupDeadlineMs ?? 30_000, stopMs: opts.stopDeadlineMs ?? 10_000 });
  try {
    await lifecycle.start();
  } catch (e) {
    await closeOwned();
    throw e;
  }
  let routes: Hono<AppEnv> | null = null;
  const alice = `@alice:${serverName}`;

  return {
    sent,
    db: database.db as unknown as Db,
    serverUserId,
    clock,
    async deliver(type, content, deliverOpts = {}) {
      const origin = deliverOpts.origin ?? 'client';
      const senderDevice = deliverOpts.senderDevice !== undefined ? deliverOpts.senderDevice : origin === 'federation' ? null : 'ALICEDEVICE';
      const during: SentMessage[] = [];
      const listener = (m: SentMessage) => during.push(m);
      listeners.add(listener);
      try {
        const [outcome] = await dispatcher.dispatch([{ type, sender: deliverOpts.sender ?? alice, senderDevice, origin, content }]);
        return { outcome: outcome ?? 'unknown_type', sent: during };
      } finally {
        listeners.delete(listener);
      }
    },
    async request(path, init, as = {}) {
      if (loaded?.module.routes === undefined) throw new Error(`handler module "${resolved.name}" has no routes`);
      if (routes === null) {
        const app = new Hono<AppEnv & ModuleRouteEnv>();
        installErrorHandling(app as unknown as Hono<AppEnv>, log);
        const user = createMiddleware<ModuleRouteEnv>(async (c, next) => {
          const header = c.req.header('x-test-user');
          c.set('user', JSON.parse(header ?? '{}') as { userId: string; deviceId: string | null });
          await next();
        });
        app.use('*', user);
        // The server mounts module routes with moduleRoutes(); the kit the same way, error handler included.
        const moduleApp = loaded.module.routes.build(loaded.ctx);
        moduleApp.onError((app as unknown as { errorHandler: Parameters<typeof moduleApp.onError>[0] }).errorHandler);
        app.route('/', moduleApp);
        routes = app as unknown as Hono<AppEnv>;
      }
      const headers = new Headers(init?.headers);
      headers.set('x-test-user', JSON.stringify({ userId: as.userId ?? alice, deviceId: as.deviceId === undefined ? 'ALICEDEVICE' : as.deviceId }));
      return routes.request(path, { ...init, headers });
    },
    async close() {
      await lifecycle.stop();
      await closeOwned();
    },
  };
}
