import { MatrixError } from '../errors/matrix-error.ts';

/**
 * Sync tokens: `v1.<to-device position>.<device-list position>`. Tokens from before device lists
 * (`v1.<to-device position>`) are still read; further streams will be appended as more
 * dot-separated integers, which this parser already tolerates.
 */
const TOKEN = /^v1\.(\d{1,15})(?:\.(\d{1,15}))?(?:\.\d{1,15})*$/;

export interface SyncPosition {
  toDevice: number;
  /** Null in a token written before device lists were served. */
  deviceLists: number | null;
}

export function encodeSyncToken(toDevice: number, deviceLists?: number): string {
  return deviceLists === undefined ? `v1.${toDevice}` : `v1.${toDevice}.${deviceLists}`;
}

export function parseSyncToken(raw: string, param = 'since'): SyncPosition {
  const match = TOKEN.exec(raw);
  if (match === null) throw new MatrixError('M_INVALID_PARAM', `Malformed ${param} token`);
  return { toDevice: Number(match[1]), deviceLists: match[2] === undefined ? null : Number(match[2]) };
}
