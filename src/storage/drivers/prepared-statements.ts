import type postgres from 'postgres';

/**
 * drizzle runs every query through postgres.js `unsafe(…, { prepare: false })`, and postgres.js
 * sends an unprepared query with parameters as two round trips: Parse/Describe, wait for the
 * parameter types, then Bind/Execute. Preparing makes every later run of the same text one round
 * trip, which roughly halves the database latency of each request.
 *
 * postgres.js keeps prepared statements per connection until the connection is recycled
 * (`max_lifetime`, 30–60 min by default), so only texts with few parameters are prepared: the
 * query shapes of this server are a small fixed set, while a statement with one parameter per
 * row or per listed id takes a new text for every size and would mostly be used once.
 */
export const MAX_PREPARED_PARAMETERS = 64;

type UnsafeArgs = Parameters<postgres.Sql['unsafe']>;
type Callback = (sql: postgres.Sql) => unknown;

/** Wraps a postgres.js client (and the clients of its transactions) so drizzle's queries are prepared. */
export function withPreparedStatements(client: postgres.Sql): postgres.Sql {
  return new Proxy(client, {
    get(target, prop, receiver) {
      if (prop === 'unsafe') {
        return (query: UnsafeArgs[0], params?: UnsafeArgs[1], options?: UnsafeArgs[2]) => {
          const n = params?.length ?? 0;
          const prepare = n > 0 && n <= MAX_PREPARED_PARAMETERS;
          return target.unsafe(query, params, { ...options, prepare });
        };
      }
      if (prop === 'begin' || prop === 'savepoint') {
        const original = Reflect.get(target, prop, receiver) as (...args: unknown[]) => unknown;
        return (...args: unknown[]) => {
          const last = args.length - 1;
          const fn = args[last] as Callback;
          args[last] = (sql: postgres.Sql) => fn(withPreparedStatements(sql));
          return original.apply(target, args);
        };
      }
      return Reflect.get(target, prop, receiver) as unknown;
    },
  });
}
