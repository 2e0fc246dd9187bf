/**
 * Telling "the database cannot serve right now" (connection lost, server restarting, standby
 * being promoted, pooler out of connections) from "this request failed": the first is answered
 * 503 with Retry-After and retried soon by background senders, the second stays a 500 and a
 * destination failure.
 */

/** A query that waited longer than `database.wait_timeout_ms` for a connection; cancelled before it ran. */
export class DatabaseWaitTimeoutError extends Error {
  readonly code = 'DATABASE_WAIT_TIMEOUT';
  constructor(waitMs: number) {
    super(`no database connection within ${waitMs} ms`);
    this.name = 'DatabaseWaitTimeoutError';
  }
}

// postgres.js's own connection codes and Node's socket errors.
const CONNECTION_CODES = new Set([
  'DATABASE_WAIT_TIMEOUT',
  'CONNECTION_CLOSED',
  'CONNECTION_DESTROYED',
  'CONNECTION_ENDED',
  'CONNECT_TIMEOUT',
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/**
 * SQLSTATEs that say nothing about the statement: class 08 (connection exception, also what
 * PgBouncer sends when it cannot reach the server), 57P01-57P03 (shutdown, crash, not accepting
 * connections yet), 25006 (a read-only transaction: the connection reached a standby, or a
 * primary that was just demoted), 53300 (too many connections).
 */
function isUnavailableSqlState(code: string): boolean {
  return /^08[0-9A-Z]{3}$/.test(code) || code === '57P01' || code === '57P02' || code === '57P03' || code === '25006' || code === '53300';
}

/** The `code` of the error or of its causes (drizzle wraps the driver's error in `cause`), outermost first. */
export function errorCodes(err: unknown): string[] {
  const codes: string[] = [];
  let current: unknown = err;
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') codes.push(code);
    current = (current as { cause?: unknown }).cause;
  }
  return codes;
}

/** The code that makes `err` a database-unavailable error, or null when it is not one. */
export function databaseUnavailableCode(err: unknown): string | null {
  return errorCodes(err).find((code) => CONNECTION_CODES.has(code) || isUnavailableSqlState(code)) ?? null;
}

export function isDatabaseUnavailable(err: unknown): boolean {
  return databaseUnavailableCode(err) !== null;
}
