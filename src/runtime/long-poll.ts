/**
 * The client side of a long-poll, as far as waiting is concerned: whether its connection is
 * gone, and its `close` event. Node's `ServerResponse` is one as it is (so watching it allocates
 * nothing); `abortSignalConnection` adapts a fetch `AbortSignal` for requests that have no socket.
 */
export interface ClientConnection {
  /** True once the connection is closed. */
  readonly destroyed: boolean;
  on(event: 'close', listener: () => void): unknown;
  off(event: 'close', listener: () => void): unknown;
}

/** A fetch `AbortSignal` seen as a ClientConnection (requests made without a socket, as in `app.request()`). */
export function abortSignalConnection(signal: AbortSignal): ClientConnection {
  return {
    get destroyed() {
      return signal.aborted;
    },
    on: (_event, listener) => signal.addEventListener('abort', listener),
    off: (_event, listener) => signal.removeEventListener('abort', listener),
  };
}

/**
 * One parked long-poll: once `park` is called, `ended` runs once, at the first of `wake` (a
 * message arrived), the timeout, or the client's connection closing. A server holds tens of
 * thousands of these at once, so the request's own state lives in the subclass, in this one
 * object, with one bound function (`wake`, which the notifier, the timer and the close event all
 * call): a callback or promise per stage would each cost more than the whole wait. The timer and
 * the listener are removed as soon as the wait ends.
 */
export abstract class LongPoll {
  private woken = false;
  private parked = false;
  private timer: NodeJS.Timeout | null = null;
  private watched: ClientConnection | null = null;

  /**
   * Ends the wait (or, before `park`, makes it end at once); safe to call more than once. What it
   * is called with (the notifier's news, or nothing, or an abort event) goes to `heard`.
   */
  readonly wake: (news?: unknown) => void;

  constructor() {
    // Assigned here rather than as a class field (`wake = () => …`): a field initializer names
    // the function at run time, which gives every instance's closure a property array of its own.
    this.wake = (news?: unknown) => {
      if (!this.woken) this.heard(news);
      this.woken = true;
      if (!this.parked) return;
      this.parked = false;
      if (this.timer !== null) clearTimeout(this.timer);
      this.timer = null;
      this.watched?.off('close', this.wake);
      this.watched = null;
      this.ended();
    };
  }

  /** Waits; `ended` runs at once if `wake` was already called or the connection is closed. */
  protected park(timeoutMs: number, connection: ClientConnection | undefined): void {
    if (this.woken || connection?.destroyed === true) {
      this.ended();
      return;
    }
    this.parked = true;
    this.timer = setTimeout(this.wake, timeoutMs);
    if (connection !== undefined) {
      this.watched = connection;
      connection.on('close', this.wake);
    }
  }

  /** The wait is over (woken, timed out, or the client gone). */
  protected abstract ended(): void;

  /** What the first wake-up was called with, before `ended` runs; a subclass may keep it. */
  protected heard(_news: unknown): void {}
}
