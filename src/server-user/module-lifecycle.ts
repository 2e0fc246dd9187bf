import { fileURLToPath } from 'node:url';
import type { Logger } from '../logger.ts';
import type { Database } from '../storage/database.ts';
import type { LoadedModule } from './dispatcher.ts';

/** The migrations table of a module: its own, so modules and core never share a sequence. */
export function moduleMigrationsTable(name: string): string {
  return `module_${name.toLowerCase().replace(/-/g, '_')}_migrations`;
}

export function migrationsFolder(migrations: string | URL): string {
  return migrations instanceof URL || migrations.startsWith('file:') ? fileURLToPath(migrations) : migrations;
}

/**
 * Starts loaded modules in load order — each one's migrations, then its `setup` — and stops
 * them in the reverse order. A setup that throws stops the modules already started and fails
 * the start, like any other module problem.
 */
export class ModuleLifecycle {
  private readonly stops: { name: string; stop: () => void | Promise<void> }[] = [];

  constructor(
    private readonly loaded: readonly LoadedModule[],
    private readonly database: Database,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    for (const { module, ctx } of this.loaded) {
      try {
        if (module.migrations !== undefined) {
          const applied = await this.database.migrate({ folder: migrationsFolder(module.migrations), table: moduleMigrationsTable(module.name) });
          if (applied > 0) ctx.log.info('module migrations applied', { count: applied });
        }
        if (module.setup !== undefined) {
          const { state: _state, ...setupCtx } = ctx;
          const result = await module.setup(setupCtx);
          if (result !== undefined) {
            ctx.state = result.state;
            if (result.stop !== undefined) this.stops.push({ name: module.name, stop: result.stop });
          }
        }
      } catch (e) {
        await this.stop();
        throw new Error(`handler module "${module.name}" failed to start: ${(e as Error).message}`, { cause: e });
      }
    }
  }

  /** Stops what was started, last first; a stop that throws is logged and the others still run. */
  async stop(): Promise<void> {
    for (const { name, stop } of this.stops.splice(0).reverse()) {
      try {
        await stop();
      } catch (e) {
        this.log.error('handler module failed to stop', { handler: name, err: String(e) });
      }
    }
  }
}
