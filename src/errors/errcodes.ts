/**
 * Every Matrix errcode this server answers with, and its usual HTTP status.
 * A `Record` so that adding a code without a status does not compile; docs/client-api.md documents
 * each one (a test checks it).
 */
export const ERRCODE_STATUS = {
  M_BAD_JSON: 400,
  M_NOT_JSON: 400,
  M_MISSING_PARAM: 400,
  M_INVALID_PARAM: 400,
  M_INVALID_USERNAME: 400,
  M_USER_IN_USE: 400,
  M_UNKNOWN_DEVICE: 400,
  M_INVALID_SIGNATURE: 400,
  M_MISSING_TOKEN: 401,
  M_UNKNOWN_TOKEN: 401,
  M_UNAUTHORIZED: 401,
  M_FORBIDDEN: 403,
  M_GUEST_ACCESS_FORBIDDEN: 403,
  M_EXCLUSIVE: 403,
  M_NOT_FOUND: 404,
  M_UNRECOGNIZED: 404,
  M_TOO_LARGE: 413,
  M_LIMIT_EXCEEDED: 429,
  M_UNKNOWN: 500,
} as const satisfies Record<string, number>;

export type ErrCode = keyof typeof ERRCODE_STATUS;
