import type { Hono } from 'hono';
import type * as v from 'valibot';
import type { Logger } from '../logger.ts';
import type { Origin } from '../services/to-device.ts';
import type { Db } from '../storage/database.ts';

/** A to-device message addressed to the server user, as a handler receives it. */
export interface ServerUserEvent<Content> {
  type: string;
  sender: string;
  /** The sending device when known (client and appservice requests); null over federation. */
  senderDevice: string | null;
  origin: Origin;
  content: Content;
}

/** What a module may do, in its event handlers and its HTTP routes. Everything it sends carries sender `@:<server_name>`. */
export interface ModuleContext<Config> {
  /** Sends to a local device queue, or to the federation outbox for a remote user. */
  send(userId: string, deviceId: string, type: string, content: Record<string, unknown>): Promise<void>;
  db: Db;
  log: Logger;
  config: Config;
  /** The server user's ID, `@:<server_name>`. */
  serverUserId: string;
}

/** What an event handler may do: the module's context, and a reply to the event's sender. */
export interface HandlerContext<Config> extends ModuleContext<Config> {
  /**
   * Sends to the device that sent the event. When that is unknown (over federation the EDU does
   * not name it), to `options.deviceId` of the sender if given — typically a device ID the
   * client put in its content — else to all the sender's devices (`*`). A known sending device
   * always wins: `deviceId` cannot redirect a reply to another device of a local sender.
   */
  reply(type: string, content: Record<string, unknown>, options?: ReplyOptions): Promise<void>;
}

/** Where a reply goes when the event does not say which device sent it. */
export interface ReplyOptions {
  /** A device of the sender to answer instead of all of them. */
  deviceId?: string;
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
export interface ModuleRoutes<Config> {
  /** A reverse-DNS unstable prefix, e.g. `org.example.franking`; unique among loaded modules. */
  namespace: string;
  /** Builds the routes (paths relative to the namespace). Called once at start; must do no I/O. */
  build(ctx: ModuleContext<Config>): Hono<ModuleRouteEnv>;
}

export interface EventHandlerSpec<S extends v.GenericSchema, Config> {
  /** Validates the content; an invalid message is dropped and counted, never handled. */
  schema: S;
  handle(event: ServerUserEvent<v.InferOutput<S>>, ctx: HandlerContext<Config>): void | Promise<void>;
}

export interface HandlerModule<Config = unknown> {
  name: string;
  /** Validates this module's block of the server config at start. */
  config?: v.GenericSchema<unknown, Config>;
  events: Record<string, EventHandlerSpec<v.GenericSchema, Config>>;
  /** The module's own drizzle tables; their migrations are generated into drizzle/ with the rest. */
  tables?: Record<string, unknown>;
  routes?: ModuleRoutes<Config>;
}

type ConfigOf<CS> = CS extends v.GenericSchema ? v.InferOutput<CS> : undefined;

/**
 * Declares a handler module. The content type of each `handle` is inferred from its schema,
 * and the config type from the config schema:
 *
 *   export default defineHandler({
 *     name: 'ping',
 *     events: { 'org.example.ping': { schema: v.object({ nonce: v.string() }), handle: … } },
 *   });
 */
export function defineHandler<
  const Schemas extends Record<string, v.GenericSchema>,
  CS extends v.GenericSchema | undefined = undefined,
>(def: {
  name: string;
  config?: CS;
  events: { [K in keyof Schemas]: EventHandlerSpec<Schemas[K], ConfigOf<CS>> };
  tables?: Record<string, unknown>;
  routes?: ModuleRoutes<ConfigOf<CS>>;
}): HandlerModule<ConfigOf<CS>> {
  return def as unknown as HandlerModule<ConfigOf<CS>>;
}
