/**
 * `matrix-to-device-server/sdk`: everything a handler module may use, and the only import a
 * module needs from this package. What is not exported here is the server's internals, free to
 * change; what is, is the extension API.
 */
export {
  defineHandler,
  handlersFor,
  type AuthenticatedUser,
  type ConfigOf,
  type EventHandlerSpec,
  type EventOf,
  type HandlerContext,
  type HandlerModule,
  type ModuleContext,
  type ModuleRouteEnv,
  type ModuleRoutes,
  type ReplyOptions,
  type ServerUserEvent,
  type SetupContext,
  type SetupResult,
  type StateCarrier,
} from '../server-user/define-handler.ts';
export type { KeyMetadata, KeyVerdict, OneTimeKeyAlgorithm, StoredKeyView, UploadedKey } from '../server-user/key-algorithm.ts';
export { MatrixError } from '../errors/matrix-error.ts';
export type { ErrCode } from '../errors/errcodes.ts';
export type { Logger } from '../logger.ts';
export type { Db } from '../storage/database.ts';
export type { Origin } from '../services/to-device.ts';
/** The largest content of one to-device message (canonical JSON bytes); larger is refused with M_TOO_LARGE. */
export { MAX_CONTENT_BYTES } from '../services/to-device.ts';
export { formatUserId, parseUserId, type UserId } from '../matrix/user-id.ts';
export { canonicalJson, canonicalJsonByteLength } from '../matrix/canonical-json.ts';
export { decodeBase64, encodeBase64 } from '../federation/base64.ts';
export { signBytes, signingKeyFromSeed, verifyBytes, type SigningKey } from '../federation/ed25519.ts';
export { queryRows } from '../storage/rows.ts';
export { intParam } from '../rest/query.ts';
export { RateLimiter } from '../services/rate-limiter.ts';
