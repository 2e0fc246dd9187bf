import { MatrixError } from '../errors/matrix-error.ts';

/** A non-negative integer query parameter, or the default when absent. */
export function intParam(raw: string | undefined, name: string, fallback: number): number {
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d{1,15}$/.test(raw)) throw new MatrixError('M_INVALID_PARAM', `${name} must be a non-negative integer`);
  return Number(raw);
}

export function boolParam(raw: string | undefined, name: string): boolean {
  if (raw === undefined || raw === '' || raw === 'false') return false;
  if (raw === 'true') return true;
  throw new MatrixError('M_INVALID_PARAM', `${name} must be true or false`);
}
