/**
 * A request to another server or to an appservice that failed in transport: refused, reset,
 * unresolvable, timed out. It carries the socket's code as `socketCode`, never as `code` or
 * `cause`: the retrying runner tells "the database is unavailable" (retried every second, no
 * backoff, not the destination's failure) by Node's socket codes on an error or its causes, and a
 * peer refusing connections is the peer's failure, to be counted and backed off.
 */
export class PeerRequestError extends Error {
  constructor(
    message: string,
    readonly socketCode: string | null = null,
  ) {
    super(message);
    this.name = 'PeerRequestError';
  }

  /** `err` as a PeerRequestError naming `what` (e.g. the request), keeping its message and code. */
  static from(what: string, err: unknown): PeerRequestError {
    if (err instanceof PeerRequestError) return err;
    const code = typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'string' ? (err as { code: string }).code : null;
    return new PeerRequestError(`${what}: ${err instanceof Error ? err.message : String(err)}`, code);
  }
}
