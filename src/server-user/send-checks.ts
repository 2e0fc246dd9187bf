import { MatrixError } from '../errors/matrix-error.ts';
import { jsonValueProblem, MAX_CLIENT_JSON_DEPTH, textProblem } from '../matrix/input-checks.ts';
import type { SendTarget } from '../sdk/define-handler.ts';
import { ModuleError } from '../sdk/module-errors.ts';
import { checkContent } from '../shared/content-checks.ts';
import { parseUserId } from '../shared/user-id.ts';

// Synapse's limit on device IDs and event types alike (the columns are text, the spec is silent).
const MAX_ID_LENGTH = 255;

function refuse(message: string): never {
  throw new ModuleError('TDS_ERR_SEND_INVALID', message);
}

/**
 * What a module may send as the server user, checked before anything is stored — in the server
 * and in the test kit alike (both go through the dispatcher's `ctx.send`), so a module whose
 * tests pass cannot meet a refusal in production. Throws a ModuleError (TDS_ERR_SEND_INVALID).
 * Content nests at most as deep as a client's (to-device content starts at level 4 of a client
 * body), so what a module sends can be relayed where a client's could.
 */
export function checkModuleSend(serverUserId: string, type: string, content: Record<string, unknown>, to: SendTarget): void {
  if (typeof to !== 'object' || to === null || typeof to.userId !== 'string' || typeof to.deviceId !== 'string') {
    refuse('send needs a target { userId, deviceId } (deviceId "*" for every device)');
  }
  const { userId, deviceId } = to;
  // A handler messaging the server user would dispatch to handlers again, possibly forever.
  if (userId === serverUserId) refuse('a module cannot send to the server user itself');
  if (parseUserId(userId, { allowEmptyLocalpart: true }) === null) refuse(`"${userId}" is not a valid user ID`);
  if (deviceId === '' || deviceId.length > MAX_ID_LENGTH) refuse(`device ID "${deviceId}" must be 1 to ${MAX_ID_LENGTH} characters, or "*"`);
  const deviceProblem = textProblem(deviceId);
  if (deviceProblem !== null) refuse(`device ID ${deviceProblem}`);
  if (typeof type !== 'string' || type === '' || type.length > MAX_ID_LENGTH) refuse(`event type must be 1 to ${MAX_ID_LENGTH} characters`);
  const typeProblem = textProblem(type);
  if (typeProblem !== null) refuse(`event type ${typeProblem}`);
  if (typeof content !== 'object' || content === null || Array.isArray(content)) refuse('content must be a JSON object');
  const contentProblem = jsonValueProblem(content, MAX_CLIENT_JSON_DEPTH - 3);
  if (contentProblem !== null) refuse(`content ${contentProblem}`);
  try {
    checkContent(content);
  } catch (e) {
    if (e instanceof MatrixError) refuse(`${e.errcode}: ${e.message}`);
    throw e;
  }
}
