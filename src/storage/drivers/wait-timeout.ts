import type postgres from 'postgres';
import { DatabaseWaitTimeoutError } from './database-unavailable.ts';

type UnsafeArgs = Parameters<postgres.Sql['unsafe']>;
type Callback = (sql: postgres.Sql) => unknown;
/** What postgres.js keeps on a query and does not type: set once the query is written to a connection. */
interface QueryInternals {
  state: unknown;
  reject: (e: unknown) => void;
}

/**
 * Bounds how long a query or a transaction waits for a connection. postgres.js queues work with
 * no time limit while it cannot connect (a dead primary, a standby not yet promoted), so every
 * request would hang until the database came back. Past `waitMs`, work that has not reached a
 * connection is cancelled (it never runs, so nothing is half done) and fails with
 * DatabaseWaitTimeoutError, which the HTTP layer answers 503. Work already running on a
 * connection is not touched: how long a statement may run is `statement_timeout`'s business.
 */
export function withWaitTimeout(client: postgres.Sql, waitMs: number): postgres.Sql {
  return new Proxy(client, {
    get(target, prop, receiver) {
      if (prop === 'unsafe') {
        return (query: UnsafeArgs[0], params?: UnsafeArgs[1], options?: UnsafeArgs[2]) => {
          const q = target.unsafe(query, params, options);
          const internals = q as unknown as QueryInternals;
          const timer = setTimeout(() => {
            if (internals.state !== null && internals.state !== undefined) return;
            const reject = internals.reject;
            internals.reject = () => reject(new DatabaseWaitTimeoutError(waitMs));
            void q.cancel();
          }, waitMs);
          const clear = (): void => clearTimeout(timer);
          q.then(clear, clear);
          return q;
        };
      }
      if (prop === 'begin') {
        const original = Reflect.get(target, prop, receiver) as (...args: unknown[]) => Promise<unknown>;
        return (...args: unknown[]) => {
          const last = args.length - 1;
          const fn = args[last] as Callback;
          // The BEGIN itself cannot be taken back out of postgres.js's queue; instead a
          // transaction that gets its connection after the caller gave up rolls back at once.
          let phase: 'waiting' | 'running' | 'abandoned' = 'waiting';
          args[last] = (sql: postgres.Sql) => {
            if (phase === 'abandoned') throw new DatabaseWaitTimeoutError(waitMs);
            phase = 'running';
            return fn(sql);
          };
          const started = original.apply(target, args);
          return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
              if (phase !== 'waiting') return;
              phase = 'abandoned';
              reject(new DatabaseWaitTimeoutError(waitMs));
            }, waitMs);
            started.then(
              (value) => {
                clearTimeout(timer);
                resolve(value);
              },
              (e: unknown) => {
                clearTimeout(timer);
                reject(e);
              },
            );
          });
        };
      }
      return Reflect.get(target, prop, receiver) as unknown;
    },
  });
}
