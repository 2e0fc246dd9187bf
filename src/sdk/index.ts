/**
 * `matrix-to-device-server/sdk`: everything a handler module may use, and the only import a
 * module needs from this package. What is exported here is the extension API, a contract
 * versioned by SDK_VERSION (semver; docs/modules.md, "Versioning"); what is not, is the
 * server's internals, free to change. Every export comes from `src/sdk/`, from `src/shared/`
 * (helpers the core uses too) or from `src/errors/`: test/sdk-surface.test.ts pins the list
 * and fails when it changes without the version changing.
 *
 * @packageDocumentation
 */

// The contract over time.
export { SDK_VERSION } from './version.ts';
export { MODULE_ERROR_CODES, ModuleError, type ModuleErrorCode, type ModuleProblem } from './module-errors.ts';

// Declaring a module.
export {
  defineHandler,
  handlersFor,
  type AuthenticatedUser,
  type ConfigOf,
  type Db,
  type EventHandlerSpec,
  type EventOf,
  type HandlerContext,
  type HandlerModule,
  type Logger,
  type ModuleContext,
  type ModuleRouteEnv,
  type ModuleRoutes,
  type ModuleServices,
  type Origin,
  type PeriodicTask,
  type ReplyOptions,
  type SendTarget,
  type ServerUserEvent,
  type SetupContext,
  type SetupResult,
  type StateCarrier,
} from './define-handler.ts';
export type { Clock } from './clock.ts';
export { createRouter, type ModuleRouter } from './router.ts';

// One-time-key algorithms a module contributes to the keys API.
export type { KeyMetadata, KeyVerdict, OneTimeKeyAlgorithm, StoredKeyView, UploadedKey } from './key-algorithm.ts';

// Errors a module's routes throw.
export { MatrixError } from '../errors/matrix-error.ts';
export type { ErrCode } from '../errors/errcodes.ts';

// Helpers the core uses too.
export { MAX_CONTENT_BYTES } from '../shared/content-checks.ts';
export { formatUserId, parseUserId, type UserId } from '../shared/user-id.ts';
export { canonicalJson, canonicalJsonByteLength } from '../shared/canonical-json.ts';
export { decodeBase64, encodeBase64 } from '../shared/base64.ts';
export { signBytes, signingKeyFromSeed, verifyBytes, type SigningKey } from '../shared/ed25519.ts';
export { queryRows } from '../shared/query-rows.ts';
export { intParam } from '../shared/query-params.ts';
export { RateLimiter } from '../shared/rate-limiter.ts';
