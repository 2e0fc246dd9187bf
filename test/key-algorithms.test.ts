import * as v from 'valibot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineHandler, type HandlerModule } from '../src/sdk/index.ts';
import { HandlerLoadError, type LoadedModule } from '../src/server-user/dispatcher.ts';
import { KeyAlgorithms } from '../src/services/key-algorithms.ts';
import { TestClient } from './support/client.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

/**
 * A one-time-key algorithm contributed by a module that is not MLS (the SDK's `keyAlgorithms`):
 * the core validates uploads with it and matches claims with it, and refuses at start a module
 * whose algorithm name is malformed, reserved or already taken.
 */
const colours = defineHandler({
  name: 'colours',
  events: {},
  keyAlgorithms: [
    {
      name: 'colour',
      validate: (k) => {
        const key = k.key as { colour?: unknown };
        if (typeof key !== 'object' || key === null || (key.colour !== 'red' && key.colour !== 'blue')) return { ok: false, error: 'a colour key is {"colour": "red" | "blue"}' };
        return { ok: true, metadata: key.colour };
      },
      claim: {
        schema: v.object({ colour: v.picklist(['red', 'blue']) }),
        matches: (params, key) => key.metadata === params.colour,
      },
    },
  ],
});

let t: TestApp;
let owner: TestClient;
let claimer: TestClient;

beforeAll(async () => {
  t = await startTestApp({ rate_limits: { keys_claim: { per_second: 0 } } }, [{ module: colours as HandlerModule<unknown> }]);
  owner = await TestClient.register(t.app, 'owner', { deviceId: 'O1' });
  claimer = await TestClient.register(t.app, 'claimer');
});
afterAll(() => t.close());

const claim = (body: Record<string, unknown>) => claimer.json<{ one_time_keys: Record<string, Record<string, Record<string, unknown>>> }>('POST', '/v3/keys/claim', { one_time_keys: { [owner.userId]: { O1: 'colour' } }, ...body });

describe('a module-contributed one-time-key algorithm', () => {
  it('refuses a whole upload when one key of it is invalid, and stores valid ones with their metadata', async () => {
    const bad = await owner.json('POST', '/v3/keys/upload', { one_time_keys: { 'colour:A': { colour: 'red' }, 'colour:B': { colour: 'green' }, 'signed_curve25519:X': 'abc' } });
    expect(bad).toMatchObject({ status: 400, body: { errcode: 'M_INVALID_PARAM' } });
    expect(String((bad.body as { error: string }).error)).toContain('colour:B');
    const good = await owner.json('POST', '/v3/keys/upload', { one_time_keys: { 'colour:A': { colour: 'red' }, 'colour:B': { colour: 'blue' }, 'colour:C': { colour: 'red' } } });
    expect(good).toEqual({ status: 200, body: { one_time_key_counts: { signed_curve25519: 0, colour: 3 } } });
  });

  it('matches claims on its parameters, refuses bad ones, and takes any key without them', async () => {
    const blue = await claim({ colour: { colour: 'blue' } });
    expect(blue.body.one_time_keys[owner.userId]?.O1).toEqual({ 'colour:B': { colour: 'blue' } });
    // No blue key left: nothing, and nothing taken.
    expect((await claim({ colour: { colour: 'blue' } })).body.one_time_keys).toEqual({});
    expect((await claim({ colour: { colour: 'green' } })).status).toBe(400);
    const any = await claim({});
    expect(Object.keys(any.body.one_time_keys[owner.userId]?.O1 ?? {})).toHaveLength(1);
    const counts = await owner.json<{ one_time_key_counts: Record<string, number> }>('POST', '/v3/keys/upload', {});
    expect(counts.body.one_time_key_counts.colour).toBe(1);
  });

  it('refuses at start a malformed, reserved or duplicate algorithm name', async () => {
    const named = (module: string, name: string) => defineHandler({ name: module, events: {}, keyAlgorithms: [{ name }] }) as HandlerModule<unknown>;
    for (const handlers of [[named('a', 'Bad Name')], [named('a', 'timeout')], [named('a', 'dup'), named('b', 'dup')]]) {
      // What createApp builds from the loaded modules (their context is not consulted to refuse).
      expect(() => new KeyAlgorithms(handlers.map((module) => ({ module, ctx: t.dispatcher.loaded[0]!.ctx }) as unknown as LoadedModule))).toThrow(HandlerLoadError);
    }
    expect(() => new KeyAlgorithms([named('a', 'fine.name-1'), named('b', 'other')].map((module) => ({ module, ctx: t.dispatcher.loaded[0]!.ctx }) as unknown as LoadedModule))).not.toThrow();
  });
});
