import { sql } from 'drizzle-orm';
import * as v from 'valibot';
import { handlersFor, queryRows } from 'matrix-to-device-server/sdk';
import type { CounterConfig } from './config.ts';
import { exampleCounters, type CounterSchema } from './schema.ts';

/** What setup keeps: when this instance started, and how many bumps it has handled. */
export interface CounterState {
  startedTs: number;
  bumps: number;
}

export const BUMP = 'org.example.counter.bump';
export const VALUE = 'org.example.counter.value';

export const bumpContent = v.object({ name: v.pipe(v.string(), v.minLength(1)) });

const on = handlersFor<CounterConfig, CounterState, CounterSchema>();

/** `org.example.counter.bump {name}` → `org.example.counter.value {name, count}` to the sender's device. */
export const bump = on(bumpContent, async (event, ctx) => {
  const { name } = event.content;
  if (name.length > ctx.config.max_name_length) {
    await ctx.reply(VALUE, { name: name.slice(0, ctx.config.max_name_length), errcode: 'M_INVALID_PARAM', error: 'name too long' });
    return;
  }
  // One statement, so two bumps racing in two server processes both count.
  const [row] = await queryRows<{ count: number }>(
    ctx.db,
    sql`insert into ${exampleCounters} (user_id, name, count, updated_ts) values (${event.sender}, ${name}, 1, ${ctx.clock.now()})
        on conflict (user_id, name) do update set count = ${exampleCounters}.count + 1, updated_ts = excluded.updated_ts
        returning count`,
  );
  ctx.state.bumps += 1;
  await ctx.reply(VALUE, { name, count: row?.count ?? 0 });
});
