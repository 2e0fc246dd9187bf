import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClient } from './support/client.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

/**
 * Property-based fuzzing of every endpoint's body, path and query: whatever arrives, the answer
 * is never a 5xx and every error is a Matrix error body.
 */
let t: TestApp;
let user: TestClient;

beforeAll(async () => {
  t = await startTestApp({ rate_limits: { send_to_device: { per_second: 0 } } });
  user = await TestClient.register(t.app, 'fuzzer');
});
afterAll(() => t.close());

const ENDPOINTS: [string, string][] = [
  ['POST', '/_matrix/client/v3/register'],
  ['POST', '/_matrix/client/v3/login'],
  ['POST', '/_matrix/client/v3/logout/all'],
  ['PUT', '/_matrix/client/v3/sendToDevice/m.fuzz/TXN'],
  ['GET', '/_matrix/client/v3/sync'],
  ['POST', '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync'],
  ['PUT', '/_matrix/client/v3/devices/DEV'],
  ['DELETE', '/_matrix/client/v3/devices/DEV'],
  ['POST', '/_matrix/client/v3/delete_devices'],
  ['POST', '/_matrix/client/v3/user/@fuzzer:test.local/filter'],
  ['POST', '/_matrix/client/v3/keys/upload'],
  ['POST', '/_matrix/client/v3/keys/query'],
  ['POST', '/_matrix/client/v3/keys/claim'],
  ['GET', '/_matrix/client/v3/keys/changes'],
  ['POST', '/_matrix/client/v3/keys/signatures/upload'],
  ['POST', '/_matrix/client/v3/keys/device_signing/upload'],
  ['PUT', '/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device'],
  ['GET', '/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device'],
  ['DELETE', '/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device'],
  ['GET', '/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/DEV/events'],
  ['POST', '/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/DEV/events'],
  ['PUT', '/_matrix/federation/v1/send/TXN'],
  ['POST', '/_matrix/federation/v1/user/keys/query'],
  ['POST', '/_matrix/federation/v1/user/keys/claim'],
  ['GET', '/_matrix/federation/v1/user/devices/@fuzzer:test.local'],
];

const body = fc.oneof(
  fc.json(),
  fc.string(),
  fc.jsonValue().map((v) => JSON.stringify({ messages: v })),
  fc.jsonValue().map((v) => JSON.stringify({ messages: { '@fuzzer:test.local': { '*': v } } })),
  fc.dictionary(fc.string(), fc.jsonValue()).map((d) => JSON.stringify({ type: 'm.login.password', identifier: d, password: d, auth: d, devices: d, extensions: d })),
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b).toString('latin1')),
  // Hostile text: deep nesting (past any recursive encoder's stack), NUL and lone surrogates
  // wherever a string or key can go, and numbers JSON.parse turns into integers.
  fc.tuple(fc.integer({ min: 1, max: 200_000 }), fc.constantFrom('[', '{"a":')).map(([n, open]) =>
    JSON.stringify({ messages: { '@fuzzer:test.local': { '*': { d: 0 } } } }).replace('0', `${open.repeat(n)}0${(open === '[' ? ']' : '}').repeat(n)}`),
  ),
  fc.tuple(fc.constantFrom('\u0000', '\ud800', '\udfff', '\ud83d x', 'a\u0000'), fc.constantFrom('user', 'device', 'key', 'value', 'password', 'device_id', 'username')).map(([bad, where]) => {
    const s = `"${bad}"`;
    if (where === 'user') return `{"messages":{${s}:{"*":{}}}}`;
    if (where === 'device') return `{"messages":{"@fuzzer:test.local":{${s}:{}}}}`;
    if (where === 'key') return `{"messages":{"@fuzzer:test.local":{"*":{${s}:1}}}}`;
    if (where === 'value') return `{"messages":{"@fuzzer:test.local":{"*":{"k":${s}}}}}`;
    return `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"fuzzer"},"${where}":${s},"auth":{"type":"m.login.dummy"}}`;
  }),
  fc.constantFrom('1.0', '1e2', '-0', '1.5', '1E400', '-0.0').map((n) => `{"messages":{"@fuzzer:test.local":{"*":{"n":${n}}}}}`),
  // Key endpoints: every field they read, with anything in it.
  fc.dictionary(fc.string(), fc.jsonValue()).map((d) =>
    JSON.stringify({ device_keys: d, one_time_keys: d, fallback_keys: d, master_key: d, self_signing_key: d, user_signing_key: d, device_id: 'DEV', device_data: d }),
  ),
  fc.tuple(fc.string(), fc.jsonValue()).map(([id, v]) => JSON.stringify({ one_time_keys: { [id]: v }, device_keys: { '@fuzzer:test.local': [id] } })),
  fc.tuple(fc.string(), fc.jsonValue()).map(([id, v]) => JSON.stringify({ one_time_keys: { '@fuzzer:test.local': { [id]: v } }, '@fuzzer:test.local': { [id]: v } })),
  fc.jsonValue().map((v) => JSON.stringify({ device_keys: { user_id: '@fuzzer:test.local', device_id: 'DEV', algorithms: v, keys: v, signatures: v } })),
);
const query = fc.array(fc.tuple(fc.constantFrom('since', 'timeout', 'filter', 'full_state', 'set_presence', 'user_id', 'device_id', 'access_token', 'from', 'to', 'next_batch', fc.string() as unknown as string), fc.string()), { maxLength: 4 });
const segment = fc.oneof(fc.string(), fc.constantFrom('%', '%zz', '..', '%00', '\u0000', 'a%00b', '%ED%A0%80', '%C0%80', '@:test.local', '*'));

async function check(res: Response): Promise<void> {
  expect(res.status).toBeLessThan(500);
  if (res.status >= 400) {
    const json = (await res.json()) as Record<string, unknown>;
    expect(typeof json.errcode).toBe('string');
    expect(typeof json.error).toBe('string');
  }
}

describe('fuzzing', () => {
  it('survives random bodies and queries on every endpoint', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...ENDPOINTS), body, query, fc.boolean(), async ([method, path], payload, params, authed) => {
        const qs = new URLSearchParams(params).toString();
        const headers: Record<string, string> = authed ? { authorization: `Bearer ${user.token}` } : {};
        const res = await t.app.request(`${path}${qs === '' ? '' : `?${qs}`}`, {
          method,
          headers,
          ...(method === 'GET' ? {} : { body: payload }),
        });
        await check(res);
      }),
      { numRuns: 1500 },
    );
  }, 120_000);

  it('survives random path segments and methods', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('GET', 'PUT', 'POST', 'DELETE', 'PATCH'),
        fc.constantFrom('/_matrix/client/v3/sendToDevice/', '/_matrix/client/v3/devices/', '/_matrix/client/v3/user/', '/_matrix/federation/v1/send/', '/_matrix/key/v2/', '/_matrix/client/v3/'),
        fc.array(segment, { minLength: 1, maxLength: 3 }),
        async (method, prefix, segments, ) => {
          const path = prefix + segments.map((s) => (/%/.test(s) ? s : encodeURIComponent(s))).join('/');
          const res = await t.app.request(path, {
            method,
            headers: { authorization: `Bearer ${user.token}` },
            ...(method === 'GET' ? {} : { body: '{"messages":{}}' }),
          });
          await check(res);
        },
      ),
      { numRuns: 800 },
    );
  }, 120_000);
});
