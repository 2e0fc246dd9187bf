import * as v from 'valibot';

const base64 = (max: number) => v.pipe(v.string(), v.regex(/^[A-Za-z0-9+/]*={0,2}$/, 'not base64'), v.minLength(1), v.maxLength(max));
// Echoed back in replies so a client can match them to its request.
const requestId = v.optional(v.pipe(v.string(), v.maxLength(128)));
/** A recipient user ID or a room ID: whatever the sender's client committed to. */
const context = v.pipe(v.string(), v.minLength(1), v.maxLength(1024));

export const frankContent = v.object({
  franking_tag: base64(64),
  context,
  request_id: requestId,
});

export const keysContent = v.object({ request_id: requestId });

export const reportContent = v.object({
  /** The plaintext exactly as the sender's client MACed it (its UTF-8 bytes). */
  message: v.pipe(v.string(), v.maxLength(60_000)),
  franking_key: base64(64),
  franking_tag: v.optional(base64(64)),
  context,
  sender: v.pipe(v.string(), v.maxLength(255)),
  accepted_ts: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(Number.MAX_SAFE_INTEGER)),
  key_version: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(2 ** 31 - 1)),
  server_frank: base64(64),
  reason: v.optional(v.pipe(v.string(), v.maxLength(1000))),
  request_id: requestId,
});

export const listReportsContent = v.object({
  since: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(Number.MAX_SAFE_INTEGER)), 0),
  limit: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(100)), 50),
  request_id: requestId,
});

export const rotateKeyContent = v.object({ request_id: requestId });

export type ReportContent = v.InferOutput<typeof reportContent>;
