import * as v from 'valibot';
import { describe, expectTypeOf, it } from 'vitest';
import { defineHandler, handlersFor, type HandlerContext, type HandlerModule, type ServerUserEvent } from '../src/sdk/index.ts';

// Type tests: `tsc` (npm run typecheck) checks these; vitest runs the (empty) bodies.
describe('SDK type inference', () => {
  it('types inline handlers\' content from their schemas, config from the config schema, state from setup', () => {
    const m = defineHandler({
      name: 'typed',
      config: v.strictObject({ greeting: v.optional(v.string(), 'hi') }),
      setup(ctx) {
        expectTypeOf(ctx.config).toEqualTypeOf<{ greeting: string }>();
        return { state: { visits: 0 } };
      },
      events: {
        'org.example.hello': {
          schema: v.object({ name: v.string(), times: v.optional(v.number()) }),
          handle(event, ctx) {
            expectTypeOf(event.content).toEqualTypeOf<{ name: string; times?: number | undefined }>();
            expectTypeOf(ctx.config.greeting).toBeString();
            expectTypeOf(ctx.state).toEqualTypeOf<{ visits: number }>();
            expectTypeOf(ctx.signal).toEqualTypeOf<AbortSignal>();
            expectTypeOf(ctx.reply).parameter(2).toEqualTypeOf<{ deviceId?: string } | undefined>();
          },
        },
        'org.example.bye': {
          schema: v.string(),
          handle: (event) => {
            expectTypeOf(event.content).toBeString();
          },
        },
      },
    });
    expectTypeOf(m).toExtend<HandlerModule<{ greeting: string }, { visits: number }>>();
    expectTypeOf(m).not.toExtend<HandlerModule<{ greeting: string }, { visits: string }>>();
  });

  it('without a config schema or setup, config and state are undefined', () => {
    defineHandler({
      name: 'bare',
      events: {
        'org.example.x': {
          schema: v.object({}),
          handle(_event, ctx) {
            expectTypeOf(ctx.config).toBeUndefined();
            expectTypeOf(ctx.state).toBeUndefined();
          },
        },
      },
    });
  });

  it('handlersFor() types handlers in files of their own, and defineHandler checks them against the module', () => {
    type Config = { limit: number };
    type State = { seen: Set<string> };
    const on = handlersFor<Config, State>();
    const handleAdd = on(v.object({ id: v.string() }), (event, ctx) => {
      expectTypeOf(event).toEqualTypeOf<ServerUserEvent<{ id: string }>>();
      expectTypeOf(ctx).toEqualTypeOf<HandlerContext<Config, State>>();
    });
    const m = defineHandler({
      name: 'split',
      config: v.object({ limit: v.number() }),
      setup: () => ({ state: { seen: new Set<string>() } }),
      events: { 'org.example.add': handleAdd },
    });
    expectTypeOf(m).toExtend<HandlerModule<Config, State>>();
    expectTypeOf(m).not.toExtend<HandlerModule<Config, { seen: string[] }>>();

    defineHandler({
      name: 'mismatch',
      setup: () => ({ state: { other: true } }),
      // @ts-expect-error the handler was written for another state than setup returns
      events: { 'org.example.add': handleAdd },
    });
  });

  it('refuses a handler that reads content its schema does not have', () => {
    defineHandler({
      name: 'wrong',
      events: {
        'org.example.x': {
          schema: v.object({ a: v.string() }),
          handle(event) {
            // @ts-expect-error `b` is not in the schema
            void event.content.b;
          },
        },
      },
    });
  });
});
