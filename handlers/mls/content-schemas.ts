import * as v from 'valibot';

/** Base64 (Matrix's unpadded, padded tolerated) of at most `max` characters. */
const base64 = (max: number) => v.pipe(v.string(), v.regex(/^[A-Za-z0-9+/]*={0,2}$/, 'not base64'), v.minLength(1), v.maxLength(max));
// Echoed back in replies so a client can match them to its request.
const requestId = v.optional(v.pipe(v.string(), v.maxLength(128)));
const userId = v.pipe(v.string(), v.regex(/^@[^:]*:.+$/, 'not a user ID'), v.maxLength(255));
const deviceId = v.pipe(v.string(), v.maxLength(255));
const device = v.object({ user_id: userId, device_id: deviceId });
// A to-device message is at most 64 KiB, so these bounds only keep one message honest.
const MAX_MESSAGE = 65_536;

export const mlsMessageContent = v.object({
  message: base64(MAX_MESSAGE),
  commit_info: v.optional(
    v.object({
      welcome: v.optional(base64(MAX_MESSAGE)),
      ratchet_tree: v.optional(base64(MAX_MESSAGE)),
      added: v.optional(v.pipe(v.array(device), v.maxLength(1000)), []),
      removed: v.optional(v.pipe(v.array(device), v.maxLength(1000)), []),
    }),
  ),
  /** Only for senders whose device the server does not know (federation): the sending member device. */
  device_id: v.optional(deviceId),
  request_id: requestId,
});

export type MlsMessageContent = v.InferOutput<typeof mlsMessageContent>;
