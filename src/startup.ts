import { readFileSync } from 'node:fs';
import { loadAppserviceRegistrations } from './appservice/load-registrations.ts';
import { AppserviceConfigError, type AppserviceRegistry } from './appservice/registration.ts';
import { ConfigError, loadConfig, type Config } from './config/config.ts';
import { formatProblem } from './sdk/module-errors.ts';
import { checkModules, type HandlerToLoad } from './server-user/module-checks.ts';
import { importHandlerModules } from './server-user/loader.ts';

/** Everything the server needs from files before it touches the database. */
export interface Prepared {
  config: Config;
  handlers: HandlerToLoad[];
  appservices: AppserviceRegistry;
  federationCa?: string;
}

export class StartupError extends Error {
  constructor(readonly problems: string[]) {
    super(`Cannot start: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'StartupError';
  }
}

/**
 * The one load step: the config, the handler modules it names (imported, their shapes and
 * configs checked), the appservice registrations and the federation CA file. Every problem of
 * every kind is collected and reported together, and nothing is created on disk or in a
 * database before they are all fixed: a PGlite directory appears only once this has passed.
 */
export async function prepareStartup(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Promise<Prepared> {
  const problems: string[] = [];
  let config: Config | null = null;
  let handlerEntries: Config['handlers'] | undefined;
  try {
    config = loadConfig(env);
    handlerEntries = config.handlers;
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    problems.push(...e.problems.map((p) => `config: ${p}`));
    handlerEntries = e.handlers;
  }
  let handlers: HandlerToLoad[] = [];
  if (handlerEntries !== undefined) {
    const imported = await importHandlerModules(handlerEntries, cwd);
    problems.push(...imported.problems.map(formatProblem));
    const checked = checkModules(imported.handlers);
    problems.push(...checked.problems.map(formatProblem));
    handlers = imported.handlers;
  }
  let appservices: AppserviceRegistry | null = null;
  let federationCa: string | undefined;
  if (config !== null) {
    try {
      appservices = loadAppserviceRegistrations(config.appservices, config.serverName);
    } catch (e) {
      if (!(e instanceof AppserviceConfigError)) throw e;
      problems.push(...e.problems.map((p) => `appservice: ${p}`));
    }
    if (config.federation.caFile !== null) {
      try {
        federationCa = readFileSync(config.federation.caFile, 'utf8');
      } catch (e) {
        problems.push(`config: federation.ca_file ${config.federation.caFile}: cannot be read (${(e as Error).message})`);
      }
    }
  }
  if (problems.length > 0 || config === null || appservices === null) throw new StartupError(problems);
  return { config, handlers, appservices, ...(federationCa === undefined ? {} : { federationCa }) };
}
