import { fileURLToPath } from 'node:url';
import type { Logger } from '../logger.ts';
import { ModuleError } from '../sdk/module-errors.ts';
import type { Database } from '../storage/drivers/database.ts';
import type { LoadedModule } from './dispatcher.ts';

/** The migrations table of a module: its own, so modules and core never share a sequence. */
export function moduleMigrationsTable(name: string): string {
  return `module_${name.toLowerCase().replace(/-/g, '_')}_migrations`;
}

export function migrationsFolder(migrations: string | URL): string {
  return migrations instanceof URL || migrations.startsWith('file:') ? fileURLToPath(migrations) : migrations;
}

export interface LifecycleDeadlines {
  /** `server_user.setup_deadline_ms`: past it the start fails (TDS_ERR_SETUP_TIMEOUT). */
  setupMs: number;
  /** `server_user.stop_deadline_ms`: for in-flight handlers, then again for `stop` (logged past it). */
  stopMs: number;
}

const TIMED_OUT = Symbol('timed out');

/** The work's result, or TIMED_OUT once `ms` has passed (the work itself goes on). Real time: deadlines are the operator's. */
async function within<T>(work: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<typeof TIMED_OUT>((resolve) => (timer = setTimeout(() => resolve(TIMED_OUT), ms)));
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Starts loaded modules in load order — each one's migrations, then its `setup`, within the
 * setup deadline — and stops them in the reverse order: each module's periodic tasks and
 * in-flight handlers first (awaited up to the stop deadline, then aborted), then its `stop`
 * (awaited up to the stop deadline again), then its pending timers cancelled. A setup that
 * throws or overruns stops the modules already started and fails the start.
 */
export class ModuleLifecycle {
  private readonly started: { loaded: LoadedModule; stop: (() => void | Promise<void>) | undefined }[] = [];

  constructor(
    private readonly loaded: readonly LoadedModule[],
    private readonly database: Database,
    private readonly log: Logger,
    private readonly deadlines: LifecycleDeadlines = { setupMs: 30_000, stopMs: 10_000 },
  ) {}

  async start(): Promise<void> {
    for (const loaded of this.loaded) {
      const { module, ctx } = loaded;
      // Registered before setup runs: the periodic tasks and timers setup starts are stopped too.
      const entry: (typeof this.started)[number] = { loaded, stop: undefined };
      this.started.push(entry);
      try {
        if (module.migrations !== undefined) {
          let applied: number;
          try {
            applied = await this.database.migrate({ folder: migrationsFolder(module.migrations), table: moduleMigrationsTable(module.name) });
          } catch (e) {
            throw new ModuleError('TDS_ERR_MIGRATIONS_FAILED', `handler module "${module.name}" migrations failed: ${(e as Error).message}`, { cause: e });
          }
          if (applied > 0) ctx.log.info('module migrations applied', { count: applied });
        }
        if (module.setup !== undefined) entry.stop = await this.setup(loaded);
      } catch (e) {
        await this.stop();
        if (e instanceof ModuleError) throw e;
        throw new ModuleError('TDS_ERR_SETUP_FAILED', `handler module "${module.name}" failed to start: ${(e as Error).message}`, { cause: e });
      }
    }
  }

  private async setup({ module, ctx }: LoadedModule): Promise<(() => void | Promise<void>) | undefined> {
    const aborter = new AbortController();
    const { state: _state, ...services } = ctx;
    const setup = module.setup as NonNullable<typeof module.setup>;
    const running = Promise.resolve().then(() => setup({ ...services, signal: aborter.signal }));
    const result = await within(running, this.deadlines.setupMs);
    if (result === TIMED_OUT) {
      aborter.abort(new DOMException(`the setup deadline of ${this.deadlines.setupMs} ms has passed`, 'TimeoutError'));
      // A setup that finishes after all still gets its stop called, so what it opened is closed.
      running.then(
        (late) => late?.stop?.(),
        () => {},
      ).catch((e: unknown) => ctx.log.error('late setup failed to stop', { code: 'TDS_ERR_STOP_FAILED', err: String(e) }));
      throw new ModuleError('TDS_ERR_SETUP_TIMEOUT', `handler module "${module.name}" setup did not finish within ${this.deadlines.setupMs} ms (server_user.setup_deadline_ms)`);
    }
    if (result === undefined) return undefined;
    ctx.state = result.state;
    return result.stop;
  }

  /** Stops what was started, last first. Past a deadline, or when a stop throws, it is logged and the others still stop. */
  async stop(): Promise<void> {
    for (const { loaded, stop } of this.started.splice(0).reverse()) {
      const { module, runtime } = loaded;
      const log = loaded.ctx.log;
      runtime.stopping = true;
      const drained = await within(Promise.all([runtime.tasks.stop(), ...[...runtime.inFlight].map((f) => f.done)]), this.deadlines.stopMs);
      if (drained === TIMED_OUT) {
        log.error('in-flight handlers did not finish before the stop deadline; aborted', { code: 'TDS_ERR_STOP_TIMEOUT', inFlight: runtime.inFlight.size, deadlineMs: this.deadlines.stopMs });
        for (const { aborter } of runtime.inFlight) aborter.abort(new DOMException(`handler module "${module.name}" is stopping`, 'AbortError'));
      }
      if (stop !== undefined) {
        try {
          const stopped = await within(Promise.resolve().then(stop), this.deadlines.stopMs);
          if (stopped === TIMED_OUT) log.error('stop did not finish before the stop deadline; shutdown goes on', { code: 'TDS_ERR_STOP_TIMEOUT', deadlineMs: this.deadlines.stopMs });
        } catch (e) {
          log.error('handler module failed to stop', { code: 'TDS_ERR_STOP_FAILED', err: String(e) });
        }
      }
      runtime.timers.cancelAll();
    }
  }
}
