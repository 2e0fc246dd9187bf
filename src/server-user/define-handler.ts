import type { Hono } from 'hono';
import type * as v from 'valibot';
import type { Logger } from '../logger.ts';
import type { Origin } from '../services/to-device.ts';
import type { Db } from '../storage/database.ts';
import type { OneTimeKeyAlgorithm } from './key-algorithm.ts';

/** A to-device message addressed to the server user, as a handler receives it. */
export interface ServerUserEvent<Content> {
  type: string;
  sender: string;
  /** The sending device when known (client and appservice requests); null over federation. */
  senderDevice: string | null;
  origin: Origin;
  content: Content;
}

/** What a module may use at start, in `setup`: everything but its own state, which setup makes. */
export interface SetupContext<Config> {
  /** Sends to a local device queue, or to the federation outbox for a remote user. */
  send(userId: string, deviceId: string, type: string, content: Record<string, unknown>): Promise<void>;
  db: Db;
  log: Logger;
  /** This module's block of the server config, validated against the module's `config` schema. */
  config: Config;
  /** The server user's ID, `@:<server_name>`. */
  serverUserId: string;
}

/**
 * What a module may do, in its event handlers and its HTTP routes. Everything it sends carries
 * sender `@:<server_name>`. `state` is what `setup` returned (undefined without a setup); it is
 * set before the server takes its first request, so read it at request time, not in `build`.
 */
export interface ModuleContext<Config, State = undefined> extends SetupContext<Config> {
  state: State;
}

export interface ReplyOptions {
  /**
   * The sender's device to reply to when the event does not say (federation carries no sending
   * device). Ignored when the sending device is known; without either, every device of the sender.
   */
  deviceId?: string;
}

/** What an event handler may do: the module's context, and a reply to the event's sender. */
export interface HandlerContext<Config, State = undefined> extends ModuleContext<Config, State> {
  /** Sends to the device that sent the event (see ReplyOptions when that is unknown). */
  reply(type: string, content: Record<string, unknown>, opts?: ReplyOptions): Promise<void>;
  /**
   * Aborted when the dispatch deadline (`server_user.dispatch_deadline_ms`) passes with this
   * handler still running: the sender has had its answer, so stop work nobody waits for.
   * Pass it to `fetch` and the like; the handler may still finish, and its sends still go out.
   */
  signal: AbortSignal;
}

/** Whom a module route's request was authenticated as (access token, or an appservice's as_token). */
export interface AuthenticatedUser {
  userId: string;
  /** Null for an appservice acting as a user without naming a device. */
  deviceId: string | null;
}

/** The Hono environment of a module's routes: `c.get('user')` is the authenticated user. */
export interface ModuleRouteEnv {
  Variables: { user: AuthenticatedUser };
}

/**
 * HTTP endpoints of a module, for what to-device messages fit badly (e.g. a moderator reading a
 * list). Mounted at `/_matrix/client/unstable/<namespace>/`, behind the same access-token
 * authentication as the rest of the client API: a request without a valid token never reaches
 * them. Errors thrown as `MatrixError` become Matrix error bodies; anything else a 500 M_UNKNOWN.
 */
export interface ModuleRoutes<Config, State = undefined> {
  /** A reverse-DNS unstable prefix, e.g. `org.example.franking`; unique among loaded modules. */
  namespace: string;
  /** Builds the routes (paths relative to the namespace). Called once at start; must do no I/O. */
  build(ctx: ModuleContext<Config, State>): Hono<ModuleRouteEnv>;
}

export interface EventHandlerSpec<S extends v.GenericSchema, Config, State = undefined> {
  /** Validates the content; an invalid message is dropped and counted, never handled. */
  schema: S;
  handle(event: ServerUserEvent<v.InferOutput<S>>, ctx: HandlerContext<Config, State>): void | Promise<void>;
}

/** What `setup` returns: the module's state (in `ctx.state` from then on) and how to stop it. */
export interface SetupResult<State> {
  state: State;
  /** Called once at shutdown, modules in the reverse of their load order. */
  stop?: () => void | Promise<void>;
}

type MaybePromise<T> = T | Promise<T>;

export interface HandlerModule<Config = unknown, State = unknown> {
  /** Unique among loaded modules; letters, digits, `-` and `_` (it names the module's migrations table). */
  name: string;
  /** Validates this module's block of the server config at start. Use `v.strictObject` so typos are reported. */
  config?: v.GenericSchema<unknown, Config>;
  /**
   * A drizzle-kit migrations folder (with `meta/_journal.json`), e.g.
   * `new URL('./drizzle', import.meta.url)`. Applied at start, only where the module is loaded,
   * and recorded in a migrations table of the module's own (`drizzle.module_<name>_migrations`).
   */
  migrations?: string | URL;
  /** Start-up work (may do I/O): called at start in load order, after the module's migrations. */
  setup?: (ctx: SetupContext<Config>) => MaybePromise<SetupResult<State> | void>;
  events: Record<string, EventHandlerSpec<v.GenericSchema, Config, State>>;
  routes?: ModuleRoutes<Config, State>;
  /** One-time-key algorithms this module validates and matches in the keys API (key-algorithm.ts). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  keyAlgorithms?: readonly OneTimeKeyAlgorithm<Config, State, any>[];
}

/** The validated config type of a config schema (`undefined` without one). */
export type ConfigOf<CS> = CS extends v.GenericSchema ? v.InferOutput<CS> : undefined;

/** The event a handler of content schema `S` receives. */
export type EventOf<S extends v.GenericSchema> = ServerUserEvent<v.InferOutput<S>>;

/**
 * Declares a handler module. The content type of each `handle` is inferred from its schema, the
 * config type from the config schema, and the state type from what `setup` returns (write
 * `setup` before `events` so TypeScript reads it first):
 *
 *   export default defineHandler({
 *     name: 'ping',
 *     events: { 'org.example.ping': { schema: v.object({ nonce: v.string() }), handle: … } },
 *   });
 */
export function defineHandler<
  const Schemas extends Record<string, v.GenericSchema>,
  CS extends v.GenericSchema | undefined = undefined,
  State = undefined,
>(def: {
  name: string;
  config?: CS;
  migrations?: string | URL;
  setup?: (ctx: SetupContext<ConfigOf<CS>>) => MaybePromise<SetupResult<State> | void>;
  // The mapped half types each inline handler's content from its own schema; the other is where
  // State is read from handlers made with handlersFor() (TypeScript does not infer it through
  // the mapped half, and a setup beside only such handlers would not be read either).
  events: { [K in keyof Schemas]: EventHandlerSpec<Schemas[K], ConfigOf<CS>, State> } & Record<string, StateCarrier<State>>;
  routes?: ModuleRoutes<ConfigOf<CS>, State>;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  keyAlgorithms?: readonly OneTimeKeyAlgorithm<ConfigOf<CS>, State, any>[];
}): HandlerModule<ConfigOf<CS>, State> {
  return def as unknown as HandlerModule<ConfigOf<CS>, State>;
}

// Type-only: the State a handler made by handlersFor() was written for. Nothing at run time.
declare const STATE: unique symbol;
export interface StateCarrier<State> {
  readonly [STATE]?: State;
  readonly [key: string]: unknown;
}

/**
 * Typed event handlers for a module whose handlers live in files of their own, without writing
 * the event and context types out at each one:
 *
 *   const on = handlersFor<MyConfig, MyState>();
 *   export const handleHello = on(helloContent, async (event, ctx) => { … });
 */
export function handlersFor<Config, State = undefined>() {
  return <S extends v.GenericSchema>(
    schema: S,
    handle: (event: ServerUserEvent<v.InferOutput<S>>, ctx: HandlerContext<Config, State>) => void | Promise<void>,
  ): EventHandlerSpec<S, Config, State> & StateCarrier<State> => ({ schema, handle });
}
