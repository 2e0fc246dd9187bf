import { afterEach, describe, expect, it } from 'vitest';
import { testModule, type ModuleTester } from '../../src/testing/index.ts';
import { KEY_PACKAGES_COUNT, KEY_PACKAGES_COUNTED, KEY_PACKAGES_ERROR, KEY_PACKAGES_UPLOAD, KEY_PACKAGES_UPLOADED } from './event-types.ts';
import mls from './index.ts';

// The mls module's KeyPackage directory on the test kit; groups with real MLS clients, which
// need the whole server, are end-to-end tests in test/handlers-mls*.test.ts.
describe('mls KeyPackage directory', () => {
  let kit: ModuleTester | undefined;
  afterEach(async () => {
    await kit?.close();
    kit = undefined;
  });

  it('counts none for a new device, and refuses what is not a KeyPackage, naming its index', async () => {
    kit = await testModule(mls);
    expect((await kit.deliver(KEY_PACKAGES_COUNT, { request_id: 'c1' })).sent).toEqual([
      { userId: '@alice:test.local', deviceId: 'ALICEDEVICE', type: KEY_PACKAGES_COUNTED, content: { request_id: 'c1', count: 0, has_last_resort: false } },
    ]);
    const upload = await kit.deliver(KEY_PACKAGES_UPLOAD, { key_packages: ['AAAA'], request_id: 'u1' });
    expect(upload.sent[0]).toMatchObject({ type: KEY_PACKAGES_UPLOADED, content: { request_id: 'u1', count: 0, rejected: [{ index: 0 }] } });
  });

  it('refuses uploads over federation, which names no sending device', async () => {
    kit = await testModule(mls);
    const { sent } = await kit.deliver(KEY_PACKAGES_UPLOAD, { key_packages: [] }, { sender: '@bob:other.example', origin: 'federation' });
    expect(sent).toEqual([{ userId: '@bob:other.example', deviceId: '*', type: KEY_PACKAGES_ERROR, content: { errcode: 'M_FORBIDDEN', error: 'KeyPackages can only be uploaded and counted by a local device' } }]);
  });
});
