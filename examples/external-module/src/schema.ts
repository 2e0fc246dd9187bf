import { bigint, integer, pgTable, primaryKey, text } from 'drizzle-orm/pg-core';

/** One counter per user and name. The module's only table; `npm run db:generate` makes its migrations. */
export const exampleCounters = pgTable(
  'example_counters',
  {
    userId: text('user_id').notNull(),
    name: text('name').notNull(),
    count: integer('count').notNull(),
    updatedTs: bigint('updated_ts', { mode: 'number' }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.name] })],
);

/** Every table of the module: what `ctx.db` is typed with (`defineHandler({ schema })`). */
export const counterSchema = { exampleCounters };
export type CounterSchema = typeof counterSchema;
