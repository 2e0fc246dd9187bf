import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import franking from './index.ts';
import { frankingTag } from './frank.ts';
import { testModule, type ModuleTester } from '../../src/testing/index.ts';
import { createTestDatabase } from '../../test/support/test-database.ts';
import type { Database } from '../../src/testing/index.ts';

const P = 'org.example.franking';
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64').replace(/=+$/, '');

// The franking module on the test kit: no server, no /sync — its handlers and its HTTP route,
// with its own migrations and setup, on PGlite or (TEST_DATABASE_URL) PostgreSQL.
describe('franking on the test kit', () => {
  let database: Database;
  let kit: ModuleTester;

  beforeAll(async () => {
    database = await createTestDatabase();
    kit = await testModule(franking, { database, config: { moderators: ['@mod:test.local'] } });
  });

  afterAll(async () => {
    await kit.close();
    await database.close();
  });

  it('franks with the key setup created, replying to the sender\'s device', async () => {
    const tag = frankingTag(randomBytes(32), Buffer.from('hello bob'));
    const { outcome, sent } = await kit.deliver(`${P}.frank`, { franking_tag: b64(tag), context: '@bob:test.local', request_id: 'r1' });
    expect(outcome).toBe('handled');
    expect(sent).toEqual([
      {
        userId: '@alice:test.local',
        deviceId: 'ALICEDEVICE',
        type: `${P}.franked`,
        content: expect.objectContaining({ request_id: 'r1', franking_tag: b64(tag), context: '@bob:test.local', sender: '@alice:test.local', key_version: 1 }),
      },
    ]);
  });

  it('refuses moderation over federation, even from a moderator\'s ID', async () => {
    const { sent } = await kit.deliver(`${P}.list_reports`, { request_id: 'm1' }, { sender: '@mod:test.local', origin: 'federation' });
    expect(sent).toEqual([{ userId: '@mod:test.local', deviceId: '*', type: `${P}.error`, content: expect.objectContaining({ errcode: 'M_FORBIDDEN', request_id: 'm1' }) }]);
  });

  it('serves GET …/reports to moderators only', async () => {
    const refused = await kit.request('/reports', {}, { userId: '@alice:test.local' });
    expect(refused.status).toBe(403);
    expect(await refused.json()).toEqual({ errcode: 'M_FORBIDDEN', error: 'Only moderators can list reports' });
    const listed = await kit.request('/reports?limit=5', {}, { userId: '@mod:test.local' });
    expect(listed.status).toBe(200);
    expect(await listed.json()).toEqual({ reports: [] });
    const bad = await kit.request('/reports?limit=0', {}, { userId: '@mod:test.local' });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { errcode: string }).errcode).toBe('M_INVALID_PARAM');
  });
});
