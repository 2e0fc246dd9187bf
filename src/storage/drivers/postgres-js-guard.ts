import type { Logger } from '../../logger.ts';

/**
 * postgres.js 3.4 (latest as of this writing) can throw from a timer when a transaction's
 * ROLLBACK is written to a connection the server just closed (pg_terminate_backend, a
 * PostgreSQL restart): `TypeError: Cannot read properties of null (reading 'write')` in
 * connection.js nextWrite. The transaction itself has already been rejected with
 * CONNECTION_CLOSED (its request answered 500) and the pool reconnects, so this one error is
 * logged, not fatal. Every other uncaught exception still ends the process.
 */
export function isPostgresJsClosedSocketBug(err: unknown): boolean {
  return (
    err instanceof TypeError &&
    /reading 'write'/.test(err.message) &&
    /postgres[\\/]src[\\/]connection\.js/.test(err.stack ?? '') &&
    /nextWrite/.test(err.stack ?? '')
  );
}

export function installPostgresJsGuard(log: Logger): void {
  process.on('uncaughtException', (err) => {
    if (isPostgresJsClosedSocketBug(err)) {
      log.warn('ignored postgres.js write on a closed connection', { err: err.message });
      return;
    }
    log.error('uncaught exception; exiting', { err: String(err), stack: (err as Error).stack });
    process.exit(1);
  });
}
