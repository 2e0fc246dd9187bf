import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { HandlerModule } from '../sdk/define-handler.ts';
import { migrationsFolder } from './module-lifecycle.ts';
import type { ModuleProblem } from '../sdk/module-errors.ts';
import { HandlerLoadError, problem, type HandlerToLoad } from './module-checks.ts';

const HANDLERS_DIR = fileURLToPath(new URL('../../handlers', import.meta.url));

export interface HandlerConfigEntry {
  /**
   * A module folder under handlers/ (`ping`), an installed npm package (`my-module`,
   * `@me/my-module`), or a path to a module file or package folder of your own.
   */
  module: string;
  config?: unknown;
}

type Located = { file: string } | { problem: ModuleProblem };

const BUILT_IN = /^[a-z0-9][a-z0-9_-]*$/i;
const PACKAGE_NAME = /^(@[a-z0-9][\w.-]*\/)?[a-z0-9][\w.-]*$/i;
// What a module's package.json `exports` may answer to, Node's order for an ESM import.
const CONDITIONS = ['node', 'import', 'default'];

function exportTarget(exported: unknown): string | null {
  if (typeof exported === 'string') return exported;
  if (Array.isArray(exported)) return exportTarget(exported[0]);
  if (typeof exported !== 'object' || exported === null) return null;
  const entries = exported as Record<string, unknown>;
  if ('.' in entries) return exportTarget(entries['.']);
  for (const [key, value] of Object.entries(entries)) {
    if (CONDITIONS.includes(key)) {
      const target = exportTarget(value);
      if (target !== null) return target;
    }
  }
  return null;
}

/** The entry file of a package folder: `exports` (its "." entry), else `main`, else index.js. */
function packageEntry(dir: string, spec: string): Located {
  const manifest = join(dir, 'package.json');
  if (!existsSync(manifest)) {
    for (const file of ['index.ts', 'index.js']) if (existsSync(join(dir, file))) return { file: join(dir, file) };
    return { problem: problem('TDS_ERR_MODULE_ENTRY', `handler module "${spec}": the folder ${dir} has neither a package.json nor an index.ts or index.js`) };
  }
  let pkg: { exports?: unknown; main?: unknown };
  try {
    pkg = JSON.parse(readFileSync(manifest, 'utf8')) as typeof pkg;
  } catch (e) {
    return { problem: problem('TDS_ERR_MODULE_ENTRY', `handler module "${spec}": ${manifest} is not valid JSON (${(e as Error).message})`) };
  }
  const target = pkg.exports !== undefined ? exportTarget(pkg.exports) : typeof pkg.main === 'string' ? pkg.main : 'index.js';
  if (target === null) return { problem: problem('TDS_ERR_MODULE_ENTRY', `handler module "${spec}": ${manifest} "exports" has no "." entry for import`) };
  const file = resolve(dir, target);
  if (!existsSync(file)) return { problem: problem('TDS_ERR_MODULE_ENTRY', `handler module "${spec}": its entry ${file} does not exist (is the module built?)`) };
  return { file };
}

function findPackage(name: string, from: string): string | null {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    if (dirname(dir) === dir) return null;
  }
}

/**
 * Where a configured module is. Relative paths and package names are resolved from the working
 * directory (where the server was started), as an operator's `npm install` puts them there.
 */
function locate(spec: string, cwd: string): Located {
  const isPath = spec.startsWith('.') || isAbsolute(spec) || (!PACKAGE_NAME.test(spec) && spec.includes('/'));
  if (isPath) {
    const path = resolve(cwd, spec);
    if (!existsSync(path)) return { problem: problem('TDS_ERR_MODULE_NOT_FOUND', `handler module "${spec}" not found: nothing at ${path}`) };
    return statSync(path).isDirectory() ? packageEntry(path, spec) : { file: path };
  }
  if (BUILT_IN.test(spec)) {
    for (const file of ['index.ts', 'index.js']) {
      const candidate = join(HANDLERS_DIR, spec, file);
      if (existsSync(candidate)) return { file: candidate };
    }
  }
  if (PACKAGE_NAME.test(spec)) {
    const dir = findPackage(spec, cwd);
    if (dir !== null) return packageEntry(dir, spec);
  }
  return {
    problem: problem(
      'TDS_ERR_MODULE_NOT_FOUND',
      `handler module "${spec}" not found: no folder ${join(HANDLERS_DIR, spec)}, and no package "${spec}" in node_modules of ${cwd} or above (a path of your own starts with ./ or /)`,
    ),
  };
}

function isHandlerModule(value: unknown): value is HandlerModule<unknown, unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { name?: unknown }).name === 'string' &&
    typeof (value as { events?: unknown }).events === 'object' &&
    (value as { events?: unknown }).events !== null
  );
}

/** Problems in what a module declares that the type checker cannot catch in JavaScript. */
export function shapeProblems(spec: string, module: HandlerModule<unknown, unknown>): ModuleProblem[] {
  const problems: ModuleProblem[] = [];
  const label = `handler module "${spec}"`;
  if (module.setup !== undefined && typeof module.setup !== 'function') problems.push(problem('TDS_ERR_MODULE_SHAPE', `${label}: setup must be a function`));
  for (const [type, handler] of Object.entries(module.events)) {
    if (typeof handler?.handle !== 'function' || typeof handler.schema !== 'object') problems.push(problem('TDS_ERR_MODULE_SHAPE', `${label}: event "${type}" needs a schema and a handle function`));
  }
  if (module.migrations !== undefined) {
    const folder = migrationsFolder(module.migrations);
    if (!existsSync(join(folder, 'meta', '_journal.json'))) {
      problems.push(problem('TDS_ERR_MIGRATIONS_MISSING', `${label}: migrations folder ${folder} has no meta/_journal.json (make it with drizzle-kit generate, and ship it with the module)`));
    }
  }
  return problems;
}

/**
 * Imports the configured handler modules (each one's default export), collecting every problem
 * rather than stopping at the first, so one run reports them all. Does no I/O beyond reading
 * the modules' files.
 */
export async function importHandlerModules(entries: readonly HandlerConfigEntry[], cwd = process.cwd()): Promise<{ handlers: HandlerToLoad[]; problems: ModuleProblem[] }> {
  const problems: ModuleProblem[] = [];
  const handlers: HandlerToLoad[] = [];
  for (const entry of entries) {
    const located = locate(entry.module, cwd);
    if ('problem' in located) {
      problems.push(located.problem);
      continue;
    }
    let imported: { default?: unknown };
    try {
      imported = (await import(pathToFileURL(located.file).href)) as { default?: unknown };
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if (code === 'ERR_UNKNOWN_FILE_EXTENSION' && /\.[mc]?ts$/.test(located.file)) {
        problems.push(
          problem(
            'TDS_ERR_MODULE_TYPESCRIPT',
            `handler module "${entry.module}": ${located.file} is TypeScript, and this server runs without a TypeScript loader (the production build): build the module to JavaScript (tsc) and name the .js file or the module's package`,
          ),
        );
      } else problems.push(problem('TDS_ERR_MODULE_IMPORT', `handler module "${entry.module}" failed to import: ${(e as Error).message}`));
      continue;
    }
    if (!isHandlerModule(imported.default)) {
      problems.push(problem('TDS_ERR_MODULE_NOT_A_MODULE', `handler module "${entry.module}" has no default export made with defineHandler()`));
      continue;
    }
    const shape = shapeProblems(entry.module, imported.default);
    problems.push(...shape);
    if (shape.length === 0) handlers.push({ module: imported.default, config: entry.config });
  }
  return { handlers, problems };
}

/** importHandlerModules, throwing a HandlerLoadError with every problem when there is one. */
export async function loadHandlerModules(entries: readonly HandlerConfigEntry[], cwd = process.cwd()): Promise<HandlerToLoad[]> {
  const { handlers, problems } = await importHandlerModules(entries, cwd);
  if (problems.length > 0) throw new HandlerLoadError(problems);
  return handlers;
}
