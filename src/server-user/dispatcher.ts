import * as mittModule from 'mitt';
import type { Emitter } from 'mitt';
import * as v from 'valibot';
import type { Logger } from '../logger.ts';
import { DISPATCH_SECONDS, type Counters } from '../services/counters.ts';
import type { ServerUserMessage } from '../services/to-device.ts';
import type { Db } from '../storage/database.ts';
import type { HandlerContext, HandlerModule, ModuleContext } from './define-handler.ts';

export interface HandlerToLoad {
  module: HandlerModule<unknown>;
  /** This module's block of the server config, validated against `module.config`. */
  config?: unknown;
}

export class HandlerLoadError extends Error {
  constructor(readonly problems: string[]) {
    super(`Cannot load handler modules:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'HandlerLoadError';
  }
}

/** A module that passed the checks at start, with its validated config in its context. */
export interface LoadedModule {
  module: HandlerModule<unknown>;
  ctx: ModuleContext<unknown>;
}

/** Sends as the server user; provided by the to-device service. */
export type SendAsServer = (userId: string, deviceId: string, type: string, content: Record<string, unknown>) => Promise<void>;

export interface DispatcherDeps {
  handlers: readonly HandlerToLoad[];
  db: Db;
  log: Logger;
  counters: Counters;
  serverUserId: string;
  deadlineMs: number;
  send: SendAsServer;
}

/** One dispatched message and how its handler's work is awaited. */
interface Envelope {
  message: ServerUserMessage;
  /** performance.now() at dispatch, for the latency histogram. */
  startedAt: number;
  track(work: Promise<void>, onLate: (outcome: string) => void): void;
}

// mitt ships ESM at run time but CommonJS-style typings, which NodeNext reads as a namespace.
const mitt = mittModule.default as unknown as typeof mittModule.default.default;

export const DISPATCH_COUNTER = 'server_user_dispatch_total';

/**
 * The MSC4246 registry: event type → handler module, on a mitt emitter. Messages to the server
 * user are never stored; each is validated and handed to its module's handler. A handler that
 * throws, rejects or hangs affects neither the sender's response nor any other handler.
 */
export class ServerUserDispatcher {
  private readonly emitter: Emitter<Record<string, Envelope>> = mitt();
  readonly modules: readonly { name: string; eventTypes: string[] }[];
  /** Every loaded module and its context, for what else a module contributes (its routes). */
  readonly loaded: readonly LoadedModule[];

  constructor(private readonly deps: DispatcherDeps) {
    const problems: string[] = [];
    const owners = new Map<string, string>();
    const names = new Set<string>();
    const loaded: { name: string; eventTypes: string[] }[] = [];
    const contexts: LoadedModule[] = [];
    for (const { module, config: raw } of deps.handlers) {
      if (names.has(module.name)) {
        problems.push(`handler module "${module.name}" is loaded twice`);
        continue;
      }
      names.add(module.name);
      let config: unknown = raw;
      if (module.config !== undefined) {
        const parsed = v.safeParse(module.config, raw ?? {});
        if (!parsed.success) {
          for (const issue of parsed.issues) {
            const path = issue.path?.map((p) => String(p.key)).join('.');
            problems.push(`handler module "${module.name}" config${path ? `.${path}` : ''}: ${issue.message}`);
          }
          continue;
        }
        config = parsed.output;
      }
      for (const type of Object.keys(module.events)) {
        const owner = owners.get(type);
        if (owner !== undefined) problems.push(`event type "${type}" is claimed by both "${owner}" and "${module.name}"`);
        else owners.set(type, module.name);
      }
      loaded.push({ name: module.name, eventTypes: Object.keys(module.events) });
      const ctx: ModuleContext<unknown> = {
        send: this.deps.send,
        db: this.deps.db,
        log: this.deps.log.child({ handler: module.name }),
        config,
        serverUserId: this.deps.serverUserId,
      };
      contexts.push({ module, ctx });
      this.register(module, ctx);
    }
    if (problems.length > 0) throw new HandlerLoadError(problems);
    this.modules = loaded;
    this.loaded = contexts;
  }

  private register(module: HandlerModule<unknown>, moduleCtx: ModuleContext<unknown>): void {
    const { log } = moduleCtx;
    for (const [type, spec] of Object.entries(module.events)) {
      this.emitter.on(type, (envelope) => {
        const { message } = envelope;
        const parsed = v.safeParse(spec.schema, message.content);
        if (!parsed.success) {
          this.count(type, 'invalid_content', envelope.startedAt);
          log.debug('invalid content dropped', { type, sender: message.sender, issue: parsed.issues[0]?.message });
          return;
        }
        const ctx: HandlerContext<unknown> = {
          ...moduleCtx,
          reply: (replyType, content, options) =>
            this.deps.send(message.sender, message.senderDevice ?? options?.deviceId ?? '*', replyType, content),
        };
        let work: Promise<void>;
        try {
          work = Promise.resolve(spec.handle({ ...message, content: parsed.output }, ctx));
        } catch (e) {
          work = Promise.reject(e);
        }
        envelope.track(work, (outcome) => log.warn('handler finished after the deadline', { type, outcome }));
      });
    }
  }

  /** Counts an outcome; for event types with a handler, also times it from `startedAt`. */
  private count(type: string, outcome: string, startedAt?: number): void {
    this.deps.counters.inc(DISPATCH_COUNTER, { type, outcome });
    if (startedAt !== undefined) this.deps.counters.observe(DISPATCH_SECONDS, { type, outcome }, (performance.now() - startedAt) / 1000);
  }

  /**
   * Dispatches one request's server-user messages, in order, and waits until their handlers
   * have finished or the deadline has passed, whichever is first.
   */
  async dispatch(messages: readonly ServerUserMessage[]): Promise<void> {
    const pending: Promise<void>[] = [];
    const unsettled = new Set<string>();
    const timeouts: (() => void)[] = [];
    for (const message of messages) {
      if (!this.emitter.all.has(message.type)) {
        this.count(message.type, 'unknown_type');
        this.deps.log.debug('no handler for server-user message type; dropped', { type: message.type, sender: message.sender });
        continue;
      }
      const startedAt = performance.now();
      this.emitter.emit(message.type, {
        message,
        startedAt,
        track: (work, onLate) => {
          const id = `${pending.length}`;
          unsettled.add(id);
          let timedOut = false;
          pending.push(
            work.then(
              () => {
                unsettled.delete(id);
                if (timedOut) onLate('handled');
                else this.count(message.type, 'handled', startedAt);
              },
              (err: unknown) => {
                unsettled.delete(id);
                if (timedOut) return onLate('error');
                this.count(message.type, 'error', startedAt);
                this.deps.log.error('handler failed', { type: message.type, err: String(err) });
              },
            ),
          );
          timeouts.push(() => {
            if (unsettled.has(id)) {
              timedOut = true;
              this.count(message.type, 'timeout', startedAt);
              this.deps.log.warn('handler did not finish before the deadline', { type: message.type, deadlineMs: this.deps.deadlineMs });
            }
          });
        },
      });
    }
    if (pending.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.deps.deadlineMs)));
    await Promise.race([Promise.all(pending), deadline]);
    clearTimeout(timer);
    for (const markTimeout of timeouts) markTimeout();
  }
}
