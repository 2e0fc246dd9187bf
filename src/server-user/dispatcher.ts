import * as mittModule from 'mitt';
import type { Emitter } from 'mitt';
import * as v from 'valibot';
import type { Logger } from '../logger.ts';
import type { Clock } from '../sdk/clock.ts';
import type { Db, HandlerContext, HandlerModule, ModuleContext, SendTarget } from '../sdk/define-handler.ts';
import { DISPATCH_SECONDS, type Counters } from '../metrics/counters.ts';
import type { ServerUserInbox, ServerUserMessage } from '../services/send-plan.ts';
import { checkModules, HandlerLoadError, type HandlerToLoad } from './module-checks.ts';
import { ModuleTimers } from './module-timers.ts';
import { PeriodicTasks, type TaskLeases } from './periodic-tasks.ts';
import { checkModuleSend } from './send-checks.ts';
import { systemClock } from './system-clock.ts';

export { HandlerLoadError, type HandlerToLoad } from './module-checks.ts';

/** What the server keeps of a running module beside its context, for stopping it in order. */
export interface ModuleRuntime {
  timers: ModuleTimers;
  tasks: PeriodicTasks;
  /** Handlers still running (past the dispatch deadline too), and how to abort each. */
  inFlight: Set<{ done: Promise<void>; aborter: AbortController }>;
  /** Set when shutdown has begun: new messages for the module are dropped. */
  stopping: boolean;
}

/** A module that passed the checks at start, with its validated config in its context. */
export interface LoadedModule {
  module: HandlerModule<unknown, unknown, AnySchema>;
  /** Shared by its handlers and routes; `state` is filled in by `setup` at start (module-lifecycle.ts). */
  ctx: ModuleContext<unknown, unknown, AnySchema>;
  runtime: ModuleRuntime;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnySchema = Record<string, any>;

/** How one dispatched message ended, as counted in server_user_dispatch_total. */
export type DispatchOutcome = 'handled' | 'error' | 'timeout' | 'invalid_content' | 'unknown_type';

/** Sends as the server user; provided by the to-device service. */
export type SendAsServer = (userId: string, deviceId: string, type: string, content: Record<string, unknown>) => Promise<void>;

export interface DispatcherDeps {
  handlers: readonly HandlerToLoad[];
  /** A drizzle database on the server's connection, typed with (and knowing) a module's schema. */
  dbFor: (schema: AnySchema | undefined) => Db<AnySchema>;
  /** The time modules see: the real clock, or the test kit's. */
  clock: Clock;
  /**
   * Times the dispatch deadline; the system clock when absent. Apart from `clock` because the
   * test kit's modules' time stands still until the test moves it, and its deliveries must
   * still end at the deadline; the server passes one clock for both.
   */
  deadlineClock?: Clock;
  /** Leases of `deployment` periodic tasks, held in this process's name. */
  leases: TaskLeases;
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
  track(work: Promise<void>, aborter: AbortController, onLate: (outcome: string) => void): void;
  /** Records how the message ended when that is known without waiting (invalid content). */
  outcome(outcome: DispatchOutcome): void;
}

const noop = (): void => {};

// mitt ships ESM at run time but CommonJS-style typings, which NodeNext reads as a namespace.
const mitt = mittModule.default as unknown as typeof mittModule.default.default;

export const DISPATCH_COUNTER = 'server_user_dispatch_total';

/**
 * The MSC4246 registry: event type → handler module, on a mitt emitter. Messages to the server
 * user are never stored; each is validated and handed to its module's handler. A handler that
 * throws, rejects or hangs affects neither the sender's response nor any other handler.
 */
export class ServerUserDispatcher implements ServerUserInbox {
  private readonly emitter: Emitter<Record<string, Envelope>> = mitt();
  readonly modules: readonly { name: string; eventTypes: string[] }[];
  /** Every loaded module and its context, for what else a module contributes (its routes). */
  readonly loaded: readonly LoadedModule[];

  constructor(private readonly deps: DispatcherDeps) {
    const { checked, problems } = checkModules(deps.handlers);
    if (problems.length > 0) throw new HandlerLoadError(problems);
    this.modules = checked.map(({ module }) => ({ name: module.name, eventTypes: Object.keys(module.events) }));
    this.loaded = checked.map(({ module, config }) => {
      const log = this.deps.log.child({ handler: module.name });
      const timers = new ModuleTimers(this.deps.clock);
      const tasks = new PeriodicTasks(module.name, timers, this.deps.leases, log);
      const runtime: ModuleRuntime = { timers, tasks, inFlight: new Set(), stopping: false };
      const ctx: ModuleContext<unknown, unknown, AnySchema> = {
        send: (type, content, to) => this.sendChecked(type, content, to),
        db: this.deps.dbFor(module.schema),
        log,
        config,
        serverUserId: this.deps.serverUserId,
        clock: timers,
        periodic: (task) => tasks.add(task),
        state: undefined,
      };
      const loaded = { module, ctx, runtime };
      this.register(loaded);
      return loaded;
    });
  }

  /** Every send and reply of every module passes here, in the server and the test kit alike. */
  private async sendChecked(type: string, content: Record<string, unknown>, to: SendTarget): Promise<void> {
    checkModuleSend(this.deps.serverUserId, type, content, to);
    await this.deps.send(to.userId, to.deviceId, type, content);
  }

  private register({ module, ctx: moduleCtx, runtime }: LoadedModule): void {
    const { log } = moduleCtx;
    for (const [type, spec] of Object.entries(module.events)) {
      this.emitter.on(type, (envelope) => {
        const { message } = envelope;
        if (runtime.stopping) {
          // Shutdown has begun: the module's stop must not overlap a handler started now.
          this.count(type, 'error', envelope.startedAt);
          envelope.outcome('error');
          log.warn('message dropped: the module is stopping', { type, sender: message.sender });
          return;
        }
        const parsed = v.safeParse(spec.schema, message.content);
        if (!parsed.success) {
          this.count(type, 'invalid_content', envelope.startedAt);
          envelope.outcome('invalid_content');
          log.debug('invalid content dropped', { type, sender: message.sender, issue: parsed.issues[0]?.message });
          return;
        }
        const aborter = new AbortController();
        // Spread per event: the module context is one object, but `state` is read at call time.
        const ctx: HandlerContext<unknown, unknown, AnySchema> = {
          ...moduleCtx,
          reply: (replyType, content, opts) => this.sendChecked(replyType, content, { userId: message.sender, deviceId: message.senderDevice ?? opts?.deviceId ?? '*' }),
          signal: aborter.signal,
        };
        let work: Promise<void>;
        try {
          work = Promise.resolve(spec.handle({ ...message, content: parsed.output }, ctx));
        } catch (e) {
          work = Promise.reject(e);
        }
        const inFlight = { done: work.then(noop, noop), aborter };
        runtime.inFlight.add(inFlight);
        void inFlight.done.then(() => runtime.inFlight.delete(inFlight));
        envelope.track(work, aborter, (outcome) => log.warn('handler finished after the deadline', { type, outcome }));
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
  async dispatch(messages: readonly ServerUserMessage[]): Promise<DispatchOutcome[]> {
    const outcomes: DispatchOutcome[] = [];
    const pending: Promise<void>[] = [];
    const unsettled = new Set<number>();
    const timeouts: (() => void)[] = [];
    for (const [index, message] of messages.entries()) {
      if (!this.emitter.all.has(message.type)) {
        outcomes[index] = 'unknown_type';
        this.count(message.type, 'unknown_type');
        this.deps.log.debug('no handler for server-user message type; dropped', { type: message.type, sender: message.sender });
        continue;
      }
      const startedAt = performance.now();
      this.emitter.emit(message.type, {
        message,
        startedAt,
        outcome: (outcome) => (outcomes[index] = outcome),
        track: (work, aborter, onLate) => {
          unsettled.add(index);
          let timedOut = false;
          pending.push(
            work.then(
              () => {
                unsettled.delete(index);
                if (timedOut) return onLate('handled');
                outcomes[index] = 'handled';
                this.count(message.type, 'handled', startedAt);
              },
              (err: unknown) => {
                unsettled.delete(index);
                if (timedOut) return onLate('error');
                outcomes[index] = 'error';
                this.count(message.type, 'error', startedAt);
                this.deps.log.error('handler failed', { type: message.type, err: String(err) });
              },
            ),
          );
          timeouts.push(() => {
            if (unsettled.has(index)) {
              timedOut = true;
              outcomes[index] = 'timeout';
              this.count(message.type, 'timeout', startedAt);
              this.deps.log.warn('handler did not finish before the deadline', { type: message.type, deadlineMs: this.deps.deadlineMs });
              aborter.abort(new DOMException(`the dispatch deadline of ${this.deps.deadlineMs} ms has passed`, 'TimeoutError'));
            }
          });
        },
      });
    }
    if (pending.length === 0) return outcomes;
    let cancel = noop;
    const deadline = new Promise<void>((resolve) => (cancel = (this.deps.deadlineClock ?? systemClock).setTimeout(resolve, this.deps.deadlineMs)));
    await Promise.race([Promise.all(pending), deadline]);
    cancel();
    for (const markTimeout of timeouts) markTimeout();
    return outcomes;
  }
}
