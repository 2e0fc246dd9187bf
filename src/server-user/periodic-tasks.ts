import type { Logger, PeriodicTask } from '../sdk/define-handler.ts';
import { ModuleError } from '../sdk/module-errors.ts';
import type { ModuleTimers } from './module-timers.ts';

/** Leases on named work shared by the processes of a deployment (the queue_leases table). */
export interface TaskLeases {
  /** Takes or renews the lease for this process; false while another live process holds it. */
  acquire(key: string, ttlMs: number, now: number): Promise<boolean>;
  release(key: string): Promise<void>;
}

const TASK_NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/i;
// A holder renews at every run, `everyMs` apart plus the run's own length: twice the interval
// and a margin for a slow run keep a live holder's lease from expiring under it.
const LEASE_MARGIN_MS = 30_000;

interface Running {
  task: PeriodicTask;
  cancel: () => void;
  aborter: AbortController;
  /** The run in progress, if any. */
  current: Promise<void> | null;
}

/**
 * A module's periodic tasks (`ctx.periodic`): each one scheduled on the module's clock, runs
 * never overlapping, and for `scope: 'deployment'` run only by the process holding the task's
 * lease. `stop()` cancels what is scheduled, aborts and awaits the runs in progress, and gives
 * the leases up so another process takes over at its next run.
 */
export class PeriodicTasks {
  private readonly running = new Map<string, Running>();
  private stopped = false;

  constructor(
    private readonly moduleName: string,
    private readonly timers: ModuleTimers,
    private readonly leases: TaskLeases,
    private readonly log: Logger,
  ) {}

  add(task: PeriodicTask): void {
    const label = `handler module "${this.moduleName}" periodic task "${String(task?.name)}"`;
    if (this.stopped) throw new ModuleError('TDS_ERR_PERIODIC_TASK', `${label}: the module has stopped`);
    if (typeof task?.name !== 'string' || !TASK_NAME.test(task.name)) throw new ModuleError('TDS_ERR_PERIODIC_TASK', `${label}: name must be letters, digits, "-", "_" and "." (at most 63)`);
    if (this.running.has(task.name)) throw new ModuleError('TDS_ERR_PERIODIC_TASK', `${label} is declared twice`);
    if (!Number.isInteger(task.everyMs) || task.everyMs < 1) throw new ModuleError('TDS_ERR_PERIODIC_TASK', `${label}: everyMs must be a positive integer`);
    if (typeof task.run !== 'function') throw new ModuleError('TDS_ERR_PERIODIC_TASK', `${label}: run must be a function`);
    const running: Running = { task, cancel: () => {}, aborter: new AbortController(), current: null };
    this.running.set(task.name, running);
    this.schedule(running);
  }

  private leaseKey(task: PeriodicTask): string {
    return `module:${this.moduleName}:${task.name}`;
  }

  private schedule(running: Running): void {
    running.cancel = this.timers.setTimeout(() => {
      running.current = this.runOnce(running).finally(() => {
        running.current = null;
        if (!this.stopped) this.schedule(running);
      });
    }, running.task.everyMs);
  }

  private async runOnce({ task, aborter }: Running): Promise<void> {
    try {
      if (task.scope === 'deployment') {
        const held = await this.leases.acquire(this.leaseKey(task), 2 * task.everyMs + LEASE_MARGIN_MS, this.timers.now());
        if (!held || this.stopped) return;
      }
      await task.run(aborter.signal);
    } catch (e) {
      this.log.error('periodic task failed', { task: task.name, err: String(e) });
    }
  }

  /** The runs in progress, for the test kit to await after moving its clock. */
  async idle(): Promise<void> {
    await Promise.all([...this.running.values()].map((r) => r.current));
  }

  /** Stops every task: no new run, the current ones aborted and awaited, leases released. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const r of this.running.values()) {
      r.cancel();
      r.aborter.abort(new DOMException(`handler module "${this.moduleName}" is stopping`, 'AbortError'));
    }
    await this.idle();
    for (const { task } of this.running.values()) {
      if (task.scope !== 'deployment') continue;
      await this.leases.release(this.leaseKey(task)).catch((e: unknown) => this.log.warn('releasing a periodic task lease failed', { task: task.name, err: String(e) }));
    }
  }
}
