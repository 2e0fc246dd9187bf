import { afterEach, describe, expect, it } from 'vitest';
import { testModule, type ModuleTester } from 'matrix-to-device-server/testing';
import counter from '../src/index.ts';
import { exampleCounters } from '../src/schema.ts';

describe('counter module', () => {
  let kit: ModuleTester | undefined;
  afterEach(async () => {
    await kit?.close();
    kit = undefined;
  });

  it('counts per user and name in its own table, replying to the sending device', async () => {
    kit = await testModule(counter);
    expect((await kit.deliver('org.example.counter.bump', { name: 'coffee' })).sent).toEqual([
      { userId: '@alice:test.local', deviceId: 'ALICEDEVICE', type: 'org.example.counter.value', content: { name: 'coffee', count: 1 } },
    ]);
    await kit.deliver('org.example.counter.bump', { name: 'coffee' });
    const third = await kit.deliver('org.example.counter.bump', { name: 'coffee' });
    expect(third.sent[0]?.content).toEqual({ name: 'coffee', count: 3 });
    const bob = await kit.deliver('org.example.counter.bump', { name: 'coffee' }, { sender: '@bob:elsewhere.example', origin: 'federation' });
    // Federation names no sending device: the reply goes to all of Bob's.
    expect(bob.sent).toEqual([{ userId: '@bob:elsewhere.example', deviceId: '*', type: 'org.example.counter.value', content: { name: 'coffee', count: 1 } }]);
  });

  it('drops content that does not match the schema, and applies its config', async () => {
    kit = await testModule(counter, { config: { max_name_length: 3 } });
    expect(await kit.deliver('org.example.counter.bump', { name: 42 })).toEqual({ outcome: 'invalid_content', sent: [] });
    const long = await kit.deliver('org.example.counter.bump', { name: 'coffee' });
    expect(long.sent[0]?.content).toMatchObject({ name: 'cof', errcode: 'M_INVALID_PARAM' });
  });

  it('refuses an unknown config key with its code, as the server would at start', async () => {
    await expect(testModule(counter, { config: { max_name_lenght: 3 } })).rejects.toThrow(/TDS_ERR_CONFIG_UNKNOWN_KEY: handler module "counter" config\.max_name_lenght: unknown setting/);
  });

  it('answers its route with the caller\'s counter, and a Matrix 404 for one that does not exist', async () => {
    kit = await testModule(counter);
    await kit.deliver('org.example.counter.bump', { name: 'tea' });
    const found = await kit.request('/counters/tea');
    expect({ status: found.status, body: await found.json() }).toEqual({ status: 200, body: { name: 'tea', count: 1 } });
    const missing = await kit.request('/counters/tea', {}, { userId: '@bob:test.local' });
    expect({ status: missing.status, body: await missing.json() }).toEqual({ status: 404, body: { errcode: 'M_NOT_FOUND', error: 'No counter named tea' } });
  });

  it('stamps counters with the module clock, which the test drives', async () => {
    kit = await testModule(counter);
    await kit.clock.advance(60_000);
    await kit.deliver('org.example.counter.bump', { name: 'later' });
    const [row] = await kit.db.select({ updatedTs: exampleCounters.updatedTs }).from(exampleCounters);
    expect(row?.updatedTs).toBe(kit.clock.now());
  });
});
