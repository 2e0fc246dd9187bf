import { MatrixError } from '../errors/matrix-error.ts';

/**
 * Sync tokens: `v1.<to-device position>`. Further streams will be appended as more
 * dot-separated integers, which this parser already tolerates.
 */
const TOKEN = /^v1\.(\d{1,15})(?:\.\d{1,15})*$/;

export function encodeSyncToken(toDevice: number): string {
  return `v1.${toDevice}`;
}

export function parseSyncToken(raw: string, param = 'since'): number {
  const match = TOKEN.exec(raw);
  if (match === null) throw new MatrixError('M_INVALID_PARAM', `Malformed ${param} token`);
  return Number(match[1]);
}
