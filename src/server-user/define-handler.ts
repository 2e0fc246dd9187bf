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

/** What a handler may do. Everything it sends carries sender `@:<server_name>`. */
export interface HandlerContext<Config> {
  /** Sends to the device that sent the event (all the sender's devices when that is unknown). */
  reply(type: string, content: Record<string, unknown>): Promise<void>;
  /** Sends to a local device queue, or to the federation outbox for a remote user. */
  send(userId: string, deviceId: string, type: string, content: Record<string, unknown>): Promise<void>;
  db: Db;
  log: Logger;
  config: Config;
  /** The server user's ID, `@:<server_name>`. */
  serverUserId: string;
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
}): HandlerModule<ConfigOf<CS>> {
  return def as unknown as HandlerModule<ConfigOf<CS>>;
}
