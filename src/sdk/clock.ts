/**
 * Time as a module sees it (`ctx.clock`): the server's real clock, or, under the test kit, a
 * clock the test moves forward (`kit.clock.advance(ms)`). Use it instead of `Date.now()` and
 * `setTimeout` so that tests can drive time, and timers still pending when the module stops are
 * cancelled by the server.
 *
 * @since 1.0.0
 */
export interface Clock {
  /** Milliseconds since the Unix epoch, as `Date.now()`. */
  now(): number;
  /**
   * Calls `fn` after `ms` milliseconds; returns a function that cancels it. Cancelled by the
   * server when the module stops, if still pending.
   */
  setTimeout(fn: () => void, ms: number): () => void;
  /** Resolves after `ms` milliseconds; rejects with the signal's reason if it is aborted first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}
