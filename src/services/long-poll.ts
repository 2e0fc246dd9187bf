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
 * One parked long-poll: `wait` calls its `onEnd` once, at the first of `wake` (a message
 * arrived), the timeout, or the client's connection closing. A server holds tens of thousands of
 * these at once, so a wait is one object and one bound function (`wake`, which the notifier, the
 * timer and the close event all call), with a callback rather than a promise (a promise and the
 * reactions chained on it cost more than the whole wait), and it removes its timer and listener
 * as soon as it ends.
 */
export class LongPoll {
  private woken = false;
  private onEnd: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private connection: ClientConnection | null = null;

  /** Ends the wait (or, before `wait`, makes it end at once); safe to call more than once. */
  readonly wake: () => void;

  constructor() {
    // Assigned here rather than as a class field (`wake = () => …`): a field initializer names
    // the function at run time, which gives every instance's closure a property array of its own.
    this.wake = () => {
      this.woken = true;
      const onEnd = this.onEnd;
      if (onEnd === null) return;
      this.onEnd = null;
      if (this.timer !== null) clearTimeout(this.timer);
      this.timer = null;
      this.connection?.off('close', this.wake);
      this.connection = null;
      onEnd();
    };
  }

  /** Calls `onEnd` once the wait is over: at once if `wake` was already called or the connection is closed. */
  wait(timeoutMs: number, connection: ClientConnection | undefined, onEnd: () => void): void {
    if (this.woken || connection?.destroyed === true) {
      onEnd();
      return;
    }
    this.onEnd = onEnd;
    this.timer = setTimeout(this.wake, timeoutMs);
    if (connection !== undefined) {
      this.connection = connection;
      connection.on('close', this.wake);
    }
  }
}
