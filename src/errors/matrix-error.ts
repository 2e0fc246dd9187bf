import { ERRCODE_STATUS, type ErrCode } from './errcodes.ts';

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
