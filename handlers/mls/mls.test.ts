import { afterEach, describe, expect, it } from 'vitest';
import { testModule, type ModuleTester } from '../../src/testing/index.ts';
import { MLS_MESSAGE, MLS_MESSAGE_UNSTABLE } from './event-types.ts';
import mls from './index.ts';

// The mls delivery service on the test kit: what it answers without any group. Groups with real
// MLS clients and KeyPackages through the keys API need the whole server: end-to-end tests in
// test/handlers-mls*.test.ts.
describe('mls delivery service', () => {
  let kit: ModuleTester | undefined;
  afterEach(async () => {
    await kit?.close();
    kit = undefined;
  });

  it('rejects what is not an MLS message, in the family the client wrote in, to the sending device', async () => {
    kit = await testModule(mls);
    const stable = await kit.deliver(MLS_MESSAGE, { message: 'AAAA', request_id: 'r1' });
    expect(stable.sent).toEqual([
      {
        userId: '@alice:test.local',
        deviceId: 'ALICEDEVICE',
        type: 'm.mls.rejected',
        content: { request_id: 'r1', group_id: null, epoch: null, reason: 'invalid_message', error: 'message is not an MLS PublicMessage or PrivateMessage this service can deliver' },
      },
    ]);
    const unstable = await kit.deliver(MLS_MESSAGE_UNSTABLE, { message: 'AAAA' });
    expect(unstable.sent.map((m) => m.type)).toEqual(['org.matrix.msc4244.mls.rejected']);
  });

  it('over federation, without a device named, answers every device of the sender', async () => {
    kit = await testModule(mls);
    const { sent } = await kit.deliver(MLS_MESSAGE, { message: 'AAAA' }, { sender: '@bob:other.example', origin: 'federation' });
    expect(sent.map((m) => [m.userId, m.deviceId])).toEqual([['@bob:other.example', '*']]);
  });
});
