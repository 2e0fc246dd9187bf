import { existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { HandlerModule } from './define-handler.ts';
import { HandlerLoadError, type HandlerToLoad } from './dispatcher.ts';

const HANDLERS_DIR = fileURLToPath(new URL('../../handlers', import.meta.url));

export interface HandlerConfigEntry {
  /** A module folder under handlers/ (`ping`), or a path to a module file of your own. */
  module: string;
  config?: unknown;
}

function locate(spec: string): string | null {
  if (/^[a-z0-9][a-z0-9_-]*$/i.test(spec)) {
    for (const file of ['index.ts', 'index.js']) {
      const candidate = resolve(HANDLERS_DIR, spec, file);
      if (existsSync(candidate)) return candidate;
    }
    return null;
  }
  const path = isAbsolute(spec) ? spec : resolve(process.cwd(), spec);
  return existsSync(path) ? path : null;
}

function isHandlerModule(value: unknown): value is HandlerModule<unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { name?: unknown }).name === 'string' &&
    typeof (value as { events?: unknown }).events === 'object'
  );
}

/** Imports the configured handler modules (each module's default export). */
export async function loadHandlerModules(entries: readonly HandlerConfigEntry[]): Promise<HandlerToLoad[]> {
  const problems: string[] = [];
  const loaded: HandlerToLoad[] = [];
  for (const entry of entries) {
    const file = locate(entry.module);
    if (file === null) {
      problems.push(`handler module "${entry.module}" not found (looked for handlers/${entry.module}/index.ts or index.js, or that path)`);
      continue;
    }
    let imported: { default?: unknown };
    try {
      imported = (await import(pathToFileURL(file).href)) as { default?: unknown };
    } catch (e) {
      problems.push(`handler module "${entry.module}" failed to import: ${(e as Error).message}`);
      continue;
    }
    if (!isHandlerModule(imported.default)) {
      problems.push(`handler module "${entry.module}" has no default export made with defineHandler()`);
      continue;
    }
    loaded.push({ module: imported.default, config: entry.config });
  }
  if (problems.length > 0) throw new HandlerLoadError(problems);
  return loaded;
}
