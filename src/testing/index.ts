/**
 * `matrix-to-device-server/testing`: runs one handler module in isolation, the way the server
 * runs it — content validated by its schemas, its config by its config schema, its migrations
 * applied, `setup` before the first event and `stop` at `close()`, the dispatch deadline and
 * `ctx.signal` — on an in-memory database, with what it sends recorded instead of delivered.
 * In the spirit of Hono's `app.request()`: no ports, no sockets, no /sync.
 *
 *   const kit = await testModule(myModule, { config: { greeting: 'hi' } });
 *   const { outcome, sent } = await kit.deliver('org.example.hello', { name: 'alice' });
 *   expect(sent).toEqual([{ userId: '@alice:test.local', deviceId: 'ALICEDEVICE', type: 'org.example.hi', content: { … } }]);
 *   await kit.close();
 */
import { Hono } from 'hono';
import { createMiddleware } from 'hono/factory';
import { createLogger, type Logger } from '../logger.ts';
import { installErrorHandling } from '../rest/errors.ts';
import type { AppEnv } from '../rest/env.ts';
import { Counters } from '../services/counters.ts';
import type { Origin } from '../services/to-device.ts';
import { openDatabase, type Database, type Db } from '../storage/database.ts';
import type { HandlerModule, ModuleRouteEnv } from '../server-user/define-handler.ts';
import { ServerUserDispatcher, type DispatchOutcome } from '../server-user/dispatcher.ts';
import { ModuleLifecycle } from '../server-user/module-lifecycle.ts';

export type { DispatchOutcome } from '../server-user/dispatcher.ts';
export type { Database } from '../storage/database.ts';

export interface TestModuleOptions {
  /** The module's block of the server config, raw: validated by the module's schema as at start. */
  config?: unknown;
  /** Default `test.local`; the server user is `@:<serverName>`. */
  serverName?: string;
  /** `server_user.dispatch_deadline_ms`; default 5000. */
  deadlineMs?: number;
  /**
   * A database to run on (it stays open at `close()`), e.g. `openDatabase({ kind: 'postgres', … })`
   * to test on PostgreSQL; default a fresh in-memory PGlite, closed at `close()`.
   */
  database?: Database;
  /** Where the module's log lines go; default nowhere. */
  log?: Logger;
}

/** One message the module sent (as `@:<serverName>`). */
export interface SentMessage {
  userId: string;
  /** A device ID, or `*` for every device of the user. */
  deviceId: string;
  type: string;
  content: Record<string, unknown>;
}

/** Who an event comes from; by default a local client, `@alice:<serverName>` on device `ALICEDEVICE`. */
export interface DeliverOptions {
  sender?: string;
  /** Default `ALICEDEVICE`, or null for `origin: 'federation'` (federation names no device). */
  senderDevice?: string | null;
  origin?: Origin;
}

export interface Delivery {
  /** How the dispatch ended: `handled`, `error`, `timeout`, `invalid_content` or `unknown_type`. */
  outcome: DispatchOutcome;
  /** What the module sent while handling this event (until it finished or the deadline passed). */
  sent: SentMessage[];
}

export interface ModuleTester {
  /** Dispatches one event to the server user, as a request to `/sendToDevice` would. */
  deliver(type: string, content: Record<string, unknown>, opts?: DeliverOptions): Promise<Delivery>;
  /** Everything the module has sent so far, across deliveries and `setup`. */
  readonly sent: readonly SentMessage[];
  /** The module's database, to look at its tables. */
  readonly db: Db;
  readonly serverUserId: string;
  /**
   * Calls the module's HTTP routes (a path relative to its namespace, e.g. `/reports?limit=5`)
   * as an authenticated user; errors come back as the server would answer them.
   */
  request(path: string, init?: RequestInit, as?: { userId?: string; deviceId?: string | null }): Promise<Response>;
  /** Stops the module (its `stop`), then closes the database the kit opened. */
  close(): Promise<void>;
}

export async function testModule<Config, State>(module: HandlerModule<Config, State>, opts: TestModuleOptions = {}): Promise<ModuleTester> {
  const serverName = opts.serverName ?? 'test.local';
  const serverUserId = `@:${serverName}`;
  const log = opts.log ?? createLogger('silent');
  const database = opts.database ?? (await openDatabase({ kind: 'pglite', dataDir: null }));
  const sent: SentMessage[] = [];
  const listeners = new Set<(m: SentMessage) => void>();
  const closeOwned = async (): Promise<void> => {
    if (opts.database === undefined) await database.close();
  };
  let dispatcher: ServerUserDispatcher;
  try {
    dispatcher = new ServerUserDispatcher({
      handlers: [{ module: module as HandlerModule<unknown, unknown>, config: opts.config }],
      db: database.db,
      log,
      counters: new Counters(),
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
  const lifecycle = new ModuleLifecycle(dispatcher.loaded, database, log);
  try {
    await lifecycle.start();
  } catch (e) {
    await closeOwned();
    throw e;
  }
  const loaded = dispatcher.loaded[0];
  let routes: Hono<AppEnv> | null = null;
  const alice = `@alice:${serverName}`;

  return {
    sent,
    db: database.db,
    serverUserId,
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
      if (loaded?.module.routes === undefined) throw new Error(`handler module "${module.name}" has no routes`);
      if (routes === null) {
        const app = new Hono<AppEnv & ModuleRouteEnv>();
        installErrorHandling(app as unknown as Hono<AppEnv>, log);
        const user = createMiddleware<ModuleRouteEnv>(async (c, next) => {
          const header = c.req.header('x-test-user');
          c.set('user', JSON.parse(header ?? '{}') as { userId: string; deviceId: string | null });
          await next();
        });
        app.use('*', user);
        app.route('/', loaded.module.routes.build(loaded.ctx));
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
