import { afterEach, describe, expect, it } from 'vitest';
import { testModule, type ModuleTester } from '../../src/testing/index.ts';
import ping from './index.ts';

// The ping module on the test kit, as an author outside the repository would test it.
describe('ping', () => {
  let kit: ModuleTester | undefined;
  afterEach(async () => {
    await kit?.close();
    kit = undefined;
  });

  it('answers with the nonce and the module clock\'s time, to the sending device', async () => {
    kit = await testModule(ping);
    await kit.clock.advance(1234);
    expect(await kit.deliver('org.example.ping', { nonce: 'n1' })).toEqual({
      outcome: 'handled',
      sent: [{ userId: '@alice:test.local', deviceId: 'ALICEDEVICE', type: 'org.example.pong', content: { nonce: 'n1', server_ts: kit.clock.now() } }],
    });
  });

  it('over federation, answers the device the content names, else every device of the sender', async () => {
    kit = await testModule(ping);
    const named = await kit.deliver('org.example.ping', { nonce: 'n2', device_id: 'PHONE' }, { sender: '@bob:other.example', origin: 'federation' });
    expect(named.sent.map((m) => [m.userId, m.deviceId])).toEqual([['@bob:other.example', 'PHONE']]);
    const unnamed = await kit.deliver('org.example.ping', { nonce: 'n3' }, { sender: '@bob:other.example', origin: 'federation' });
    expect(unnamed.sent.map((m) => m.deviceId)).toEqual(['*']);
  });

  it('drops a nonce over 256 characters', async () => {
    kit = await testModule(ping);
    expect(await kit.deliver('org.example.ping', { nonce: 'x'.repeat(257) })).toEqual({ outcome: 'invalid_content', sent: [] });
  });
});
