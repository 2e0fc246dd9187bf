import { ERRCODE_STATUS, type ErrCode } from './errcodes.ts';

// A handler module installed with its own copy of this package (npm does that when versions
// differ) throws that copy's MatrixError; the brand lets `instanceof` recognise it here too.
const BRAND = Symbol.for('matrix-to-device-server.MatrixError');

/**
 * The one error type of the server: a Matrix errcode, a human message and an HTTP status.
 * `extra` carries spec-defined fields that sit beside errcode/error (e.g. `retry_after_ms`,
 * or the user-interactive-auth flows of a 401).
 */
export class MatrixError extends Error {
  readonly errcode: ErrCode;
  readonly status: number;
  readonly extra: Record<string, unknown>;
  readonly headers: Record<string, string>;
  readonly [BRAND] = true;

  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as { [BRAND]?: unknown })[BRAND] === true;
  }

  constructor(
    errcode: ErrCode,
    message: string,
    opts: { status?: number; extra?: Record<string, unknown>; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = 'MatrixError';
    this.errcode = errcode;
    this.status = opts.status ?? ERRCODE_STATUS[errcode];
    this.extra = opts.extra ?? {};
    this.headers = opts.headers ?? {};
  }

  toJSON(): Record<string, unknown> {
    return { ...this.extra, errcode: this.errcode, error: this.message };
  }
}
