/**
 * The codes of every problem the server reports about a handler module, as fastify's
 * `FST_ERR_*`: stable across versions, each documented in docs/modules.md (a test checks that),
 * so an operator or a module's CI can match on the code rather than on the wording.
 *
 * @since 1.0.0
 */
export const MODULE_ERROR_CODES = {
  TDS_ERR_MODULE_NOT_FOUND: 'a module named in `handlers` is not under handlers/, not an installed package, and no file or folder at that path',
  TDS_ERR_MODULE_ENTRY: "a module's package.json cannot be read or names no entry file that exists (is the module built?)",
  TDS_ERR_MODULE_IMPORT: 'importing the module threw',
  TDS_ERR_MODULE_TYPESCRIPT: 'a TypeScript module named to the production build, which has no TypeScript loader',
  TDS_ERR_MODULE_NOT_A_MODULE: 'the default export is not made with defineHandler()',
  TDS_ERR_MODULE_SHAPE: 'setup is not a function, or an event has no schema or no handle function',
  TDS_ERR_MODULE_NAME: 'the name is not letters, digits, "-" and "_" (at most 63)',
  TDS_ERR_MODULE_DUPLICATE: 'the same module is loaded twice',
  TDS_ERR_SDK_VERSION: "the module's `sdk` range is not valid semver or does not include this server's SDK_VERSION",
  TDS_ERR_EVENT_TYPE_TAKEN: 'two modules claim one event type',
  TDS_ERR_ROUTES_NAMESPACE: 'a routes namespace is not reverse-DNS, or two modules claim it',
  TDS_ERR_KEY_ALGORITHM: 'a one-time-key algorithm with a malformed or reserved name, or contributed by two modules',
  TDS_ERR_ROUTES_BUILD: "the module's routes.build threw",
  TDS_ERR_MIGRATIONS_MISSING: 'the migrations folder has no meta/_journal.json',
  TDS_ERR_MIGRATIONS_FAILED: "applying the module's migrations failed",
  TDS_ERR_CONFIG_UNKNOWN_KEY: "the module's config block has a key its schema does not know",
  TDS_ERR_CONFIG_INVALID: "the module's config block fails its schema",
  TDS_ERR_CONFIG_UNEXPECTED: 'the server config gives a config block to a module that takes none',
  TDS_ERR_SETUP_FAILED: 'setup threw or rejected',
  TDS_ERR_SETUP_TIMEOUT: 'setup did not finish within server_user.setup_deadline_ms',
  TDS_ERR_STOP_FAILED: 'stop threw or rejected (logged; shutdown goes on)',
  TDS_ERR_STOP_TIMEOUT: 'in-flight handlers or stop did not finish within server_user.stop_deadline_ms (logged; shutdown goes on)',
  TDS_ERR_SEND_INVALID: 'a send or reply the server refuses: to the server user, a malformed user or device ID or event type, content that is not a canonical JSON object of at most 65,536 bytes',
  TDS_ERR_PERIODIC_TASK: 'a periodic task is declared twice, with a bad name or interval, or after the module stopped',
} as const;

/** One of MODULE_ERROR_CODES. @since 1.0.0 */
export type ModuleErrorCode = keyof typeof MODULE_ERROR_CODES;

/** One problem with a module found at load or start: a code and a message naming the module. @since 1.0.0 */
export interface ModuleProblem {
  code: ModuleErrorCode;
  message: string;
}

/** How a problem is printed: the code first, so logs can be searched by it. */
export function formatProblem(problem: ModuleProblem): string {
  return `${problem.code}: ${problem.message}`;
}

/**
 * An error about one module with its code: what a refused send throws into the handler, and
 * what a failed setup is reported as. Recognised across copies of the package by `code`.
 *
 * @since 1.0.0
 */
export class ModuleError extends Error {
  constructor(
    readonly code: ModuleErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ModuleError';
  }
}
