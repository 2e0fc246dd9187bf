import type { Clock } from '../sdk/clock.ts';

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) return reject(signal.reason as Error);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The real time, for the server (its backoffs, leases, rate limits, maintenance, dispatch
 * deadline and modules); tests give createApp a TestClock (src/testing/test-clock.ts) instead.
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const timer = setTimeout(fn, ms);
    // Every timer of the server is cancelled by its stop; none may be what keeps a process
    // alive (a backoff of minutes would hold a CLI or a test worker open). `sleep` stays
    // referenced: whoever awaits it wants the process to live until it resolves.
    timer.unref();
    return () => clearTimeout(timer);
  },
  sleep,
};
