import semver from 'semver';
import * as v from 'valibot';
import type { HandlerModule } from '../sdk/define-handler.ts';
import { formatProblem, type ModuleErrorCode, type ModuleProblem } from '../sdk/module-errors.ts';
import { SDK_VERSION } from '../sdk/version.ts';

/**
 * Any module, whatever its config and state types (they were checked where it was defined; its
 * config is validated at start): so `createApp({ handlers: [{ module: myModule }] })` needs no cast.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyHandlerModule = HandlerModule<any, any, any>;

/** A module to load and its raw block of the server config. */
export interface HandlerToLoad {
  module: AnyHandlerModule;
  /** This module's block of the server config, validated against `module.config`. */
  config?: unknown;
}

/** A module that passed every check, with its config validated. */
export interface CheckedModule {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  module: HandlerModule<unknown, unknown, Record<string, any>>;
  config: unknown;
}

/** Every problem found loading the configured modules, each with its code. */
export class HandlerLoadError extends Error {
  constructor(readonly problems: ModuleProblem[]) {
    super(`Cannot load handler modules:\n${problems.map((p) => `  - ${formatProblem(p)}`).join('\n')}`);
    this.name = 'HandlerLoadError';
  }
}

export function problem(code: ModuleErrorCode, message: string): ModuleProblem {
  return { code, message };
}

/** The module's `sdk` range against this server's SDK_VERSION; undefined accepts any. */
export function sdkProblem(module: { name: string; sdk?: unknown }): ModuleProblem | null {
  if (module.sdk === undefined) return null;
  const label = `handler module "${module.name}"`;
  if (typeof module.sdk !== 'string' || semver.validRange(module.sdk) === null) {
    return problem('TDS_ERR_SDK_VERSION', `${label}: sdk ${JSON.stringify(module.sdk)} is not a semver range such as "^1.0.0"`);
  }
  if (!semver.satisfies(SDK_VERSION, module.sdk)) {
    return problem('TDS_ERR_SDK_VERSION', `${label} needs SDK ${module.sdk}; this server's SDK is ${SDK_VERSION}`);
  }
  return null;
}

// It names the module's migrations table, and logs and metrics carry it.
const MODULE_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/i;
// Reverse-DNS, as Matrix's unstable prefixes are (`org.matrix.msc4244`): at least two labels.
const NAMESPACE = /^[a-z0-9][a-z0-9-]*(\.[a-z0-9_-]+)+$/;

function issuePath(issue: v.BaseIssue<unknown>): string {
  const path = issue.path?.map((p) => String(p.key)).join('.');
  return path ? `.${path}` : '';
}

/**
 * A config schema made with `v.object` drops unknown keys silently, so a misspelt setting would
 * be ignored: they are reported here whatever object schema the module used.
 */
function unknownKeys(schema: v.GenericSchema, raw: unknown): string[] {
  const s = schema as unknown as { type?: string; entries?: Record<string, unknown> };
  if (s.type !== 'object' || s.entries === undefined || typeof raw !== 'object' || raw === null || Array.isArray(raw)) return [];
  return Object.keys(raw).filter((key) => !(key in (s.entries as object)));
}

/**
 * Every check that needs no I/O, across all modules at once so one run reports every problem:
 * names, duplicate modules, the SDK version range, event types claimed twice, route namespaces,
 * and each module's config against its schema.
 */
export function checkModules(handlers: readonly HandlerToLoad[]): { checked: CheckedModule[]; problems: ModuleProblem[] } {
  // Start-up checks the list to report every problem before the database opens, and the
  // dispatcher it is handed to needs the checked configs: one run, so a module's config schema
  // (which may transform) parses its config once.
  let result = checkedLists.get(handlers);
  if (result === undefined) checkedLists.set(handlers, (result = checkList(handlers)));
  return result;
}

const checkedLists = new WeakMap<readonly HandlerToLoad[], { checked: CheckedModule[]; problems: ModuleProblem[] }>();

function checkList(handlers: readonly HandlerToLoad[]): { checked: CheckedModule[]; problems: ModuleProblem[] } {
  const problems: ModuleProblem[] = [];
  const checked: CheckedModule[] = [];
  const names = new Set<string>();
  const typeOwners = new Map<string, string>();
  const namespaceOwners = new Map<string, string>();
  for (const { module, config: raw } of handlers) {
    const label = `handler module "${module.name}"`;
    if (!MODULE_NAME.test(module.name)) problems.push(problem('TDS_ERR_MODULE_NAME', `${label}: name must be letters, digits, "-" and "_" (at most 63)`));
    if (names.has(module.name)) {
      problems.push(problem('TDS_ERR_MODULE_DUPLICATE', `${label} is loaded twice`));
      continue;
    }
    names.add(module.name);
    let ok = true;
    const sdk = sdkProblem(module);
    if (sdk !== null) {
      problems.push(sdk);
      ok = false;
    }
    for (const type of Object.keys(module.events)) {
      const owner = typeOwners.get(type);
      if (owner !== undefined) {
        problems.push(problem('TDS_ERR_EVENT_TYPE_TAKEN', `event type "${type}" is claimed by both "${owner}" and "${module.name}"`));
        ok = false;
      } else typeOwners.set(type, module.name);
    }
    if (module.routes !== undefined) {
      const { namespace } = module.routes;
      const owner = namespaceOwners.get(namespace);
      if (!NAMESPACE.test(namespace)) {
        problems.push(problem('TDS_ERR_ROUTES_NAMESPACE', `${label} routes namespace "${namespace}" is not a reverse-DNS name like org.example.name`));
        ok = false;
      } else if (owner !== undefined) {
        problems.push(problem('TDS_ERR_ROUTES_NAMESPACE', `routes namespace "${namespace}" is claimed by both "${owner}" and "${module.name}"`));
        ok = false;
      } else namespaceOwners.set(namespace, module.name);
    }
    let config: unknown = raw;
    if (module.config !== undefined) {
      const given = raw ?? {};
      for (const key of unknownKeys(module.config, given)) {
        problems.push(problem('TDS_ERR_CONFIG_UNKNOWN_KEY', `${label} config.${key}: unknown setting`));
        ok = false;
      }
      const parsed = v.safeParse(module.config, given);
      if (!parsed.success) {
        for (const issue of parsed.issues) {
          const unknown = issue.kind === 'schema' && issue.type === 'strict_object' && issue.expected === 'never';
          problems.push(problem(unknown ? 'TDS_ERR_CONFIG_UNKNOWN_KEY' : 'TDS_ERR_CONFIG_INVALID', `${label} config${issuePath(issue)}: ${unknown ? 'unknown setting' : issue.message}`));
        }
        ok = false;
      } else config = parsed.output;
    } else if (raw !== undefined) {
      problems.push(problem('TDS_ERR_CONFIG_UNEXPECTED', `${label} takes no config, but the server config gives it one`));
      ok = false;
    }
    if (ok) checked.push({ module, config });
  }
  return { checked, problems };
}
