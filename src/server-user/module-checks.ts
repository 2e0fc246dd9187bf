import * as v from 'valibot';
import type { HandlerModule } from './define-handler.ts';

/**
 * Any module, whatever its config and state types (they were checked where it was defined; its
 * config is validated at start): so `createApp({ handlers: [{ module: myModule }] })` needs no cast.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyHandlerModule = HandlerModule<any, any>;

/** A module to load and its raw block of the server config. */
export interface HandlerToLoad {
  module: AnyHandlerModule;
  /** This module's block of the server config, validated against `module.config`. */
  config?: unknown;
}

/** A module that passed every check, with its config validated. */
export interface CheckedModule {
  module: HandlerModule<unknown, unknown>;
  config: unknown;
}

export class HandlerLoadError extends Error {
  constructor(readonly problems: string[]) {
    super(`Cannot load handler modules:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'HandlerLoadError';
  }
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
 * names, duplicate modules, event types claimed twice, route namespaces, and each module's
 * config against its schema.
 */
export function checkModules(handlers: readonly HandlerToLoad[]): { checked: CheckedModule[]; problems: string[] } {
  const problems: string[] = [];
  const checked: CheckedModule[] = [];
  const names = new Set<string>();
  const typeOwners = new Map<string, string>();
  const namespaceOwners = new Map<string, string>();
  for (const { module, config: raw } of handlers) {
    const label = `handler module "${module.name}"`;
    if (!MODULE_NAME.test(module.name)) problems.push(`${label}: name must be letters, digits, "-" and "_" (at most 63)`);
    if (names.has(module.name)) {
      problems.push(`${label} is loaded twice`);
      continue;
    }
    names.add(module.name);
    let ok = true;
    for (const type of Object.keys(module.events)) {
      const owner = typeOwners.get(type);
      if (owner !== undefined) {
        problems.push(`event type "${type}" is claimed by both "${owner}" and "${module.name}"`);
        ok = false;
      } else typeOwners.set(type, module.name);
    }
    if (module.routes !== undefined) {
      const { namespace } = module.routes;
      const owner = namespaceOwners.get(namespace);
      if (!NAMESPACE.test(namespace)) {
        problems.push(`${label} routes namespace "${namespace}" is not a reverse-DNS name like org.example.name`);
        ok = false;
      } else if (owner !== undefined) {
        problems.push(`routes namespace "${namespace}" is claimed by both "${owner}" and "${module.name}"`);
        ok = false;
      } else namespaceOwners.set(namespace, module.name);
    }
    let config: unknown = raw;
    if (module.config !== undefined) {
      const given = raw ?? {};
      for (const key of unknownKeys(module.config, given)) {
        problems.push(`${label} config.${key}: unknown setting`);
        ok = false;
      }
      const parsed = v.safeParse(module.config, given);
      if (!parsed.success) {
        for (const issue of parsed.issues) {
          const unknown = issue.kind === 'schema' && issue.type === 'strict_object' && issue.expected === 'never';
          problems.push(`${label} config${issuePath(issue)}: ${unknown ? 'unknown setting' : issue.message}`);
        }
        ok = false;
      } else config = parsed.output;
    } else if (raw !== undefined) {
      problems.push(`${label} takes no config, but the server config gives it one`);
      ok = false;
    }
    if (ok) checked.push({ module, config });
  }
  return { checked, problems };
}
