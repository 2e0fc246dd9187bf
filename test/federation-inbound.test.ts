import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeBase64 } from '../src/shared/base64.ts';
import { signingKeyFromSeed } from '../src/shared/ed25519.ts';
import { verifySignature } from '../src/federation/json-signing.ts';
import { EDUS_IN_ORDER_FIELD } from '../src/federation/receiver-order.ts';
import { LAZY_COMMIT_FLUSHES } from '../src/metrics/counters.ts';
import { queryRows } from '../src/shared/query-rows.ts';
import { federationOutbox } from '../src/storage/schema.ts';
import { TestClient } from './support/client.ts';
import { FakeServer } from './support/fake-server.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';
import { usingPostgres } from './support/test-database.ts';

const EVIL = 'evil.test';
let t: TestApp;
let fake: FakeServer;
let bob: TestClient;
let txnCounter = 0;

beforeAll(async () => {
  fake = new FakeServer(EVIL);
  await fake.start();
  t = await startTestApp({ federation: { allow_http: true, static_routes: { [EVIL]: fake.baseUrl } } });
  bob = await TestClient.register(t.app, 'bob');
});
afterAll(async () => {
  await t.close();
  await fake.stop();
});

function edu(messageId: string, messages: Record<string, Record<string, unknown>>, sender = `@mallory:${EVIL}`, type = 'm.test') {
  return { edu_type: 'm.direct_to_device', content: { sender, type, message_id: messageId, messages } };
}

async function sendTxn(body: Record<string, unknown>, opts: Parameters<FakeServer['authorization']>[4] & { noAuth?: boolean; destination?: string } = {}) {
  const uri = `/_matrix/federation/v1/send/t${++txnCounter}`;
  const full = { origin: EVIL, origin_server_ts: Date.now(), pdus: [], edus: [], ...body };
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (opts.noAuth !== true) headers.authorization = fake.authorization('PUT', uri, opts.destination ?? SERVER_NAME, full, opts);
  const res = await t.app.request(uri, { method: 'PUT', headers, body: JSON.stringify(full) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function bobReceives(): Promise<unknown[]> {
  const s = await bob.sync();
  await bob.sync({ since: s.next_batch });
  return s.to_device.events;
}

describe('inbound federation transactions', () => {
  type KeyBody = { server_name: string; verify_keys: Record<string, { key: string }>; signatures: Record<string, Record<string, string>>; valid_until_ts: number };
  const checkKeyBody = (body: KeyBody) => {
    expect(body.server_name).toBe(SERVER_NAME);
    const [keyId, { key }] = Object.entries(body.verify_keys)[0] as [string, { key: string }];
    expect(keyId).toMatch(/^ed25519:/);
    expect(body.valid_until_ts).toBeGreaterThan(Date.now());
    expect(verifySignature(body, body.signatures[SERVER_NAME]?.[keyId] as string, decodeBase64(key) as Buffer)).toBe(true);
    return keyId;
  };

  it('serves this server\'s key, self-signed', async () => {
    const res = await t.app.request('/_matrix/key/v2/server');
    expect(res.status).toBe(200);
    checkKeyBody((await res.json()) as KeyBody);
  });

  it('serves the key by id as Synapse asks for it (GET /_matrix/key/v2/server/ed25519%3A…), signed and verifiable', async () => {
    const keyId = checkKeyBody((await (await t.app.request('/_matrix/key/v2/server')).json()) as KeyBody);
    for (const path of [`/_matrix/key/v2/server/${encodeURIComponent(keyId)}`, `/_matrix/key/v2/server/${keyId}`, '/_matrix/key/v2/server/']) {
      const res = await t.app.request(path);
      expect(res.status, path).toBe(200);
      expect(checkKeyBody((await res.json()) as KeyBody)).toBe(keyId);
    }
  });

  it('says in /_matrix/federation/v1/version that it applies a transaction\'s EDUs in order', async () => {
    const res = await t.app.request('/_matrix/federation/v1/version');
    expect(await res.json()).toEqual({ server: { name: 'matrix-to-device-server', version: expect.any(String) }, [EDUS_IN_ORDER_FIELD]: true });
  });

  it('delivers an EDU signed by its origin to the local device, expanding *', async () => {
    const res = await sendTxn({ edus: [edu('m1', { [bob.userId]: { '*': { hello: 'from evil' } } })] });
    expect(res).toEqual({ status: 200, body: { pdus: {} } });
    expect(await bobReceives()).toEqual([{ sender: `@mallory:${EVIL}`, type: 'm.test', content: { hello: 'from evil' } }]);
  });

  it('applies a replayed message_id once, even in a new transaction', async () => {
    const before = t.services.counters.get('to_device_dropped_total', { reason: 'duplicate_edu' });
    expect((await sendTxn({ edus: [edu('replay-1', { [bob.userId]: { [bob.deviceId]: { n: 1 } } })] })).status).toBe(200);
    expect((await sendTxn({ edus: [edu('replay-1', { [bob.userId]: { [bob.deviceId]: { n: 1 } } })] })).status).toBe(200);
    expect(await bobReceives()).toHaveLength(1);
    expect(t.services.counters.get('to_device_dropped_total', { reason: 'duplicate_edu' })).toBe(before + 1);
  });

  it('rejects an EDU whose sender is not on the origin server', async () => {
    const before = t.services.counters.get('federation_edus_rejected_total', { reason: 'spoofed_sender' });
    const res = await sendTxn({ edus: [edu('spoof', { [bob.userId]: { '*': { x: 1 } } }, `@alice:${SERVER_NAME}`)] });
    expect(res.status).toBe(200);
    expect(await bobReceives()).toEqual([]);
    expect(t.services.counters.get('federation_edus_rejected_total', { reason: 'spoofed_sender' })).toBe(before + 1);
  });

  it('answers 401 M_UNAUTHORIZED for a bad signature, a wrong destination or no auth, storing nothing', async () => {
    const message = { edus: [edu('unauth', { [bob.userId]: { '*': { x: 1 } } })] };
    const wrongKey = signingKeyFromSeed('ed25519:fake', Buffer.alloc(32, 9));
    for (const opts of [{ signWith: wrongKey }, { claimDestination: 'someone-else.test' }, { destination: 'someone-else.test' }, { noAuth: true }]) {
      const res = await sendTxn(message, opts);
      expect(res.status).toBe(401);
      expect(res.body.errcode).toBe('M_UNAUTHORIZED');
    }
    expect(await bobReceives()).toEqual([]);
    // The message id was not burnt by the refused attempts.
    expect((await sendTxn(message)).status).toBe(200);
    expect(await bobReceives()).toHaveLength(1);
  });

  it('refuses a transaction whose body names another origin', async () => {
    const res = await sendTxn({ origin: 'other.test', edus: [edu('o', { [bob.userId]: { '*': {} } })] });
    expect(res).toMatchObject({ status: 403, body: { errcode: 'M_FORBIDDEN' } });
    expect(await bobReceives()).toEqual([]);
  });

  it('caps PDUs and EDUs per transaction and refuses PDUs one by one', async () => {
    expect((await sendTxn({ pdus: Array.from({ length: 51 }, (_, i) => ({ event_id: `$e${i}` })) })).status).toBe(400);
    expect((await sendTxn({ edus: Array.from({ length: 101 }, () => ({ edu_type: 'm.typing', content: {} })) })).status).toBe(400);
    const res = await sendTxn({ pdus: [{ event_id: '$a' }, { type: 'm.room.message', room_id: '!r:evil.test' }] });
    expect(res.status).toBe(200);
    const pdus = res.body.pdus as Record<string, { error: string }>;
    expect(Object.keys(pdus)).toHaveLength(2);
    expect(pdus.$a?.error).toEqual(expect.any(String));
  });

  it('accepts EDUs with extra content fields, as Synapse sends them', async () => {
    const synapseLike = edu('synapse-1', { [bob.userId]: { '*': { from: 'synapse' } } });
    (synapseLike.content as Record<string, unknown>)['org.matrix.opentracing_context'] = '{}';
    expect((await sendTxn({ edus: [synapseLike] })).status).toBe(200);
    expect(await bobReceives()).toEqual([{ sender: `@mallory:${EVIL}`, type: 'm.test', content: { from: 'synapse' } }]);
  });

  it('ignores unknown EDU types and malformed to-device EDUs', async () => {
    const res = await sendTxn({ edus: [{ edu_type: 'm.typing', content: {} }, { edu_type: 'm.direct_to_device', content: { sender: 1 } }] });
    expect(res.status).toBe(200);
    expect(await bobReceives()).toEqual([]);
  });

  it('never relays an inbound EDU to users of a third server', async () => {
    const before = (await t.database.db.select().from(federationOutbox)).length;
    await sendTxn({ edus: [edu('relay', { '@victim:third.test': { '*': { x: 1 } } })] });
    expect((await t.database.db.select().from(federationOutbox)).length).toBe(before);
  });

  it('dispatches EDUs for the server user to handlers, whose reply goes back over federation', async () => {
    const res = await sendTxn({ edus: [edu('ping-1', { [`@:${SERVER_NAME}`]: { '*': { nonce: 'fed' } } }, `@mallory:${EVIL}`, 'org.example.ping')] });
    expect(res.status).toBe(200);
    const rows = await t.database.db.select().from(federationOutbox);
    const pong = rows.find((r) => r.type === 'org.example.pong');
    expect(pong).toMatchObject({ destination: EVIL, sender: `@:${SERVER_NAME}`, userId: `@mallory:${EVIL}`, deviceId: '*' });
    expect(JSON.parse(pong?.content ?? '{}')).toMatchObject({ nonce: 'fed' });
  });

  it('answers a transaction of EDUs for the server user alone only once their claims are on disk', async () => {
    // Its claims commit lazily (src/storage/drivers/lazy-commits.ts); with no handler reply to flush them,
    // the server flushes before the 200. PGlite has no WAL writer, so there the flush shows.
    const flushed = async () =>
      usingPostgres() ||
      (await queryRows<{ f: boolean }>(t.database.db, sql`select pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn() as f`))[0]?.f === true;
    const txn = { edus: [edu('lazy-edu', { [`@:${SERVER_NAME}`]: { '': {} } }, `@mallory:${EVIL}`, 'org.test.unhandled')] };
    const before = t.services.counters.get(LAZY_COMMIT_FLUSHES);
    expect((await sendTxn(txn)).status).toBe(200);
    expect(t.services.counters.get(LAZY_COMMIT_FLUSHES)).toBe(before + 1);
    expect(await flushed()).toBe(true);
    // The same EDU again (a retried transaction): applied once, answered once it is durable.
    expect((await sendTxn(txn)).status).toBe(200);
    expect(await flushed()).toBe(true);
  });
});
