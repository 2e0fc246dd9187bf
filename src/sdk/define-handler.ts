import type { Hono } from 'hono';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import type * as v from 'valibot';
import type { Clock } from './clock.ts';
import type { OneTimeKeyAlgorithm } from './key-algorithm.ts';

/**
 * Where a message came from: a client's `/sendToDevice`, another server's federation
 * transaction, or an appservice acting as one of its users.
 *
 * @since 1.0.0
 */
export type Origin = 'client' | 'federation' | 'appservice';

/**
 * A module's database: drizzle on the server's PostgreSQL or PGlite, typed with the module's
 * own `schema` (from `defineHandler({ schema })`), so the core's tables are not in its types.
 * `db.query.<table>` works for the tables of that schema.
 *
 * @since 1.0.0
 */
export type Db<Schema extends Record<string, unknown> = Record<string, never>> = PgDatabase<PgQueryResultHKT, Schema>;

/** A structured logger bound to the module's name. Fields named like secrets or content are redacted. @since 1.0.0 */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

/** A to-device message addressed to the server user, as a handler receives it. @since 1.0.0 */
export interface ServerUserEvent<Content> {
  type: string;
  sender: string;
  /** The sending device when known (client and appservice requests); null over federation. */
  senderDevice: string | null;
  origin: Origin;
  content: Content;
}

/** Whom `ctx.send` sends to: a user (local or remote) and a device ID, or `*` for all of them. @since 1.0.0 */
export interface SendTarget {
  userId: string;
  deviceId: string;
}

/**
 * Work a module repeats, declared with `ctx.periodic` (in `setup`). Runs first `everyMs` after
 * it is declared, then `everyMs` after each run ends (runs never overlap). A run that throws is
 * logged and the next one runs as planned. Stopped before the module's `stop`: its signal is
 * aborted and a run in progress is awaited.
 *
 * @since 1.0.0
 */
export interface PeriodicTask {
  /** Unique within the module: letters, digits, `-`, `_` and `.`. Names the lease of a `deployment` task. */
  name: string;
  /** Milliseconds between the end of one run and the start of the next (at least 1). */
  everyMs: number;
  /**
   * `process` (the default): every server process runs it — for per-process caches.
   * `deployment`: one process of the deployment at a time runs it, the holder of a lease in the
   * shared database (taken at each run, kept for twice `everyMs` plus 30 s, released at stop so
   * another process takes over at its next run) — for clean-ups and rotations.
   */
  scope?: 'process' | 'deployment';
  run(signal: AbortSignal): void | Promise<void>;
}

/** What every part of a module may use, at start and afterwards. @since 1.0.0 */
export interface ModuleServices<Config, Schema extends Record<string, unknown> = Record<string, never>> {
  /**
   * Sends as the server user to a local device queue (waking its `/sync`), or to the federation
   * outbox for a remote user. Throws a `ModuleError` with code `TDS_ERR_SEND_INVALID` for what
   * the server refuses: the server user itself (it would loop), a malformed user or device ID or
   * event type, content that is not a canonical JSON object of at most 65,536 bytes.
   */
  send(type: string, content: Record<string, unknown>, to: SendTarget): Promise<void>;
  db: Db<Schema>;
  log: Logger;
  /** This module's block of the server config, validated against the module's `config` schema. */
  config: Config;
  /** The server user's ID, `@:<server_name>`. */
  serverUserId: string;
  /** The time, and timers cancelled when the module stops; the test kit drives it. */
  clock: Clock;
  /** Declares a periodic task (see PeriodicTask); stopped before the module's `stop`. */
  periodic(task: PeriodicTask): void;
}

/** What `setup` gets: the module's services and a signal aborted at the setup deadline. @since 1.0.0 */
export interface SetupContext<Config, Schema extends Record<string, unknown> = Record<string, never>> extends ModuleServices<Config, Schema> {
  /** Aborted when `server_user.setup_deadline_ms` passes: the start has failed, stop waiting. */
  signal: AbortSignal;
}

/**
 * What a module may do in its event handlers and its HTTP routes. Everything it sends carries
 * sender `@:<server_name>`. `state` is what `setup` returned (undefined without a setup); it is
 * set before the server takes its first request, so read it at request time, not in `build`.
 *
 * @since 1.0.0
 */
export interface ModuleContext<Config, State = undefined, Schema extends Record<string, unknown> = Record<string, never>> extends ModuleServices<Config, Schema> {
  state: State;
}

/** @since 1.0.0 */
export interface ReplyOptions {
  /**
   * The sender's device to reply to when the event does not say (federation carries no sending
   * device). Ignored when the sending device is known; without either, every device of the sender.
   */
  deviceId?: string;
}

/** What an event handler may do: the module's context, and a reply to the event's sender. @since 1.0.0 */
export interface HandlerContext<Config, State = undefined, Schema extends Record<string, unknown> = Record<string, never>> extends ModuleContext<Config, State, Schema> {
  /** Sends to the device that sent the event (see ReplyOptions when that is unknown); checked as `send` is. */
  reply(type: string, content: Record<string, unknown>, opts?: ReplyOptions): Promise<void>;
  /**
   * Aborted when the dispatch deadline (`server_user.dispatch_deadline_ms`) passes with this
   * handler still running (the sender has had its answer), or when the server stops and
   * `server_user.stop_deadline_ms` has passed. Pass it to `fetch` and the like; the handler may
   * still finish, and its sends still go out.
   */
  signal: AbortSignal;
}

/** Whom a module route's request was authenticated as (access token, or an appservice's as_token). @since 1.0.0 */
export interface AuthenticatedUser {
  userId: string;
  /** Null for an appservice acting as a user without naming a device. */
  deviceId: string | null;
}

/** The Hono environment of a module's routes: `c.get('user')` is the authenticated user. @since 1.0.0 */
export interface ModuleRouteEnv {
  Variables: { user: AuthenticatedUser };
}

/**
 * HTTP endpoints of a module, for what to-device messages fit badly (e.g. a moderator reading a
 * list). Mounted at `/_matrix/client/unstable/<namespace>/`, behind the same access-token
 * authentication as the rest of the client API: a request without a valid token never reaches
 * them. Errors thrown as `MatrixError` become Matrix error bodies; anything else a 500 M_UNKNOWN.
 *
 * @since 1.0.0
 */
export interface ModuleRoutes<Config, State = undefined, Schema extends Record<string, unknown> = Record<string, never>> {
  /** A reverse-DNS unstable prefix, e.g. `org.example.franking`; unique among loaded modules. */
  namespace: string;
  /**
   * Builds the routes (paths relative to the namespace) on a router from `createRouter()`.
   * Called once at start; must do no I/O.
   */
  build(ctx: ModuleContext<Config, State, Schema>): Hono<ModuleRouteEnv>;
}

/** One event type's schema and handler. @since 1.0.0 */
export interface EventHandlerSpec<S extends v.GenericSchema, Config, State = undefined, Schema extends Record<string, unknown> = Record<string, never>> {
  /** Validates the content; an invalid message is dropped and counted, never handled. */
  schema: S;
  handle(event: ServerUserEvent<v.InferOutput<S>>, ctx: HandlerContext<Config, State, Schema>): void | Promise<void>;
}

/** What `setup` returns: the module's state (in `ctx.state` from then on) and how to stop it. @since 1.0.0 */
export interface SetupResult<State> {
  state: State;
  /**
   * Called once at shutdown, modules in the reverse of their load order, after the module's
   * periodic tasks have stopped and its in-flight handlers have finished or been aborted. Past
   * `server_user.stop_deadline_ms` it is logged (`TDS_ERR_STOP_TIMEOUT`) and shutdown goes on.
   */
  stop?: () => void | Promise<void>;
}

type MaybePromise<T> = T | Promise<T>;

/** A module as the server loads it: what `defineHandler` returns. @since 1.0.0 */
export interface HandlerModule<Config = unknown, State = unknown, Schema extends Record<string, unknown> = Record<string, never>> {
  /** Unique among loaded modules; letters, digits, `-` and `_` (it names the module's migrations table). */
  name: string;
  /** The SDK versions the module works with, a semver range such as `^1.0.0`; checked at load (`TDS_ERR_SDK_VERSION`). */
  sdk?: string;
  /** Validates this module's block of the server config at start. Use `v.strictObject` so typos are reported. */
  config?: v.GenericSchema<unknown, Config>;
  /** The module's drizzle tables (and relations): what `ctx.db` is typed with. */
  schema?: Schema;
  /**
   * A drizzle-kit migrations folder (with `meta/_journal.json`), e.g.
   * `new URL('./drizzle', import.meta.url)`. Applied at start, only where the module is loaded,
   * and recorded in a migrations table of the module's own (`drizzle.module_<name>_migrations`).
   */
  migrations?: string | URL;
  /** Start-up work (may do I/O): called at start in load order, after the module's migrations. */
  setup?: (ctx: SetupContext<Config, Schema>) => MaybePromise<SetupResult<State> | void>;
  events: Record<string, EventHandlerSpec<v.GenericSchema, Config, State, Schema>>;
  routes?: ModuleRoutes<Config, State, Schema>;
  /** One-time-key algorithms this module validates and matches in the keys API (see OneTimeKeyAlgorithm). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  keyAlgorithms?: readonly OneTimeKeyAlgorithm<Config, State, any, Schema>[];
}

/** The validated config type of a config schema (`undefined` without one). @since 1.0.0 */
export type ConfigOf<CS> = CS extends v.GenericSchema ? v.InferOutput<CS> : undefined;

/** The event a handler of content schema `S` receives. @since 1.0.0 */
export type EventOf<S extends v.GenericSchema> = ServerUserEvent<v.InferOutput<S>>;

/**
 * Declares a handler module. The content type of each `handle` is inferred from its schema, the
 * config type from the config schema, the database's from `schema`, and the state type from
 * what `setup` returns.
 *
 * **Write `setup` before `events`.** TypeScript reads the members in order: with `setup` after
 * inline handlers, those handlers are typed before the state is known, and the error is
 * `Type '{ … }' is not assignable to type 'undefined'` on setup's `state`. Handlers made with
 * `handlersFor<Config, State>()` name their state and do not depend on the order.
 *
 *   export default defineHandler({
 *     name: 'ping',
 *     sdk: '^1.0.0',
 *     events: { 'org.example.ping': { schema: v.object({ nonce: v.string() }), handle: … } },
 *   });
 *
 * @since 1.0.0
 */
export function defineHandler<
  const Schemas extends Record<string, v.GenericSchema>,
  CS extends v.GenericSchema | undefined = undefined,
  State = undefined,
  Schema extends Record<string, unknown> = Record<string, never>,
>(def: {
  name: string;
  sdk?: string;
  config?: CS;
  schema?: Schema;
  migrations?: string | URL;
  setup?: (ctx: SetupContext<ConfigOf<CS>, Schema>) => MaybePromise<SetupResult<State> | void>;
  // The mapped half types each inline handler's content from its own schema; the other is where
  // State is read from handlers made with handlersFor() (TypeScript does not infer it through
  // the mapped half, and a setup beside only such handlers would not be read either).
  events: { [K in keyof Schemas]: EventHandlerSpec<Schemas[K], ConfigOf<CS>, State, Schema> } & Record<string, StateCarrier<State>>;
  routes?: ModuleRoutes<ConfigOf<CS>, State, Schema>;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  keyAlgorithms?: readonly OneTimeKeyAlgorithm<ConfigOf<CS>, State, any, Schema>[];
}): HandlerModule<ConfigOf<CS>, State, Schema> {
  return def as unknown as HandlerModule<ConfigOf<CS>, State, Schema>;
}

// Type-only: the State a handler made by handlersFor() was written for. Nothing at run time.
declare const STATE: unique symbol;
/** Type-only: carries the state type of a handler made with handlersFor(). @since 1.0.0 */
export interface StateCarrier<State> {
  readonly [STATE]?: State;
  readonly [key: string]: unknown;
}

/**
 * Typed event handlers for a module whose handlers live in files of their own, without writing
 * the event and context types out at each one:
 *
 *   const on = handlersFor<MyConfig, MyState, typeof mySchema>();
 *   export const handleHello = on(helloContent, async (event, ctx) => { … });
 *
 * @since 1.0.0
 */
export function handlersFor<Config, State = undefined, Schema extends Record<string, unknown> = Record<string, never>>() {
  return <S extends v.GenericSchema>(
    schema: S,
    handle: (event: ServerUserEvent<v.InferOutput<S>>, ctx: HandlerContext<Config, State, Schema>) => void | Promise<void>,
  ): EventHandlerSpec<S, Config, State, Schema> & StateCarrier<State> => ({ schema, handle });
}
