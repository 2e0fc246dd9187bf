import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_CLIENT_JSON_DEPTH } from '../src/matrix/input-checks.ts';
import { overHttp, TestClient } from './support/client.ts';
import { FakeServer } from './support/fake-server.ts';
import { serveOverHttp } from './support/http-server.ts';
import { freePort, ServerProcess } from './support/server-process.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

/**
 * Hostile identifiers and content, sent over real HTTP: each is refused with a 4xx Matrix error
 * and changes nothing (no message stored, no account or device created).
 */
const EVIL = 'evil.test';
let t: TestApp;
let http: Awaited<ReturnType<typeof serveOverHttp>>;
let fake: FakeServer;
let alice: TestClient;
let bob: TestClient;

beforeAll(async () => {
  fake = new FakeServer(EVIL);
  await fake.start();
  t = await startTestApp({
    rate_limits: { send_to_device: { per_second: 0 } },
    federation: { allow_http: true, static_routes: { [EVIL]: fake.baseUrl } },
  });
  http = await serveOverHttp(t);
  alice = await TestClient.register(overHttp(http.baseUrl), 'alice');
  bob = await TestClient.register(overHttp(http.baseUrl), 'bob');
});
afterAll(async () => {
  await http?.close();
  await t?.close();
  await fake?.stop();
});

/** What bob has been sent since the last call (and acknowledges it). */
async function bobReceives(): Promise<unknown[]> {
  const s = await bob.sync();
  await bob.sync({ since: s.next_batch });
  return s.to_device.events;
}

async function expectMatrixError(res: Response, status: number, errcode: string): Promise<Record<string, unknown>> {
  const body = (await res.json()) as Record<string, unknown>;
  expect({ status: res.status, errcode: body.errcode }).toEqual({ status, errcode });
  expect(typeof body.error).toBe('string');
  return body;
}

/** A sendToDevice with a raw body text (so escapes and number forms reach the server as written). */
function rawSend(text: string, txnId = `raw${Math.random()}`, type = 'm.hostile'): Promise<Response> {
  return alice.request('PUT', `/v3/sendToDevice/${type}/${txnId}`, text);
}

const toBob = (content: string) => `{"messages":{"${'@bob:' + SERVER_NAME}":{"*":${content}}}}`;

describe('NUL and invalid Unicode', () => {
  it('refuses NUL in a txn id, an event type and a device id in the path, before anything is stored', async () => {
    await expectMatrixError(await alice.request('PUT', '/v3/sendToDevice/m.hostile/a%00b', toBob('{"n":1}')), 400, 'M_INVALID_PARAM');
    await expectMatrixError(await alice.request('PUT', '/v3/sendToDevice/m.ho%00stile/t1', toBob('{"n":1}')), 400, 'M_INVALID_PARAM');
    await expectMatrixError(await alice.request('GET', '/v3/devices/D%00'), 400, 'M_INVALID_PARAM');
    await expectMatrixError(await alice.request('PUT', '/v3/devices/D%00', { display_name: 'x' }), 400, 'M_INVALID_PARAM');
    // Query parameters, e.g. an appservice's ?user_id= masquerade or a sync token.
    await expectMatrixError(await alice.request('GET', '/v3/sync?since=%00'), 400, 'M_INVALID_PARAM');
    await expectMatrixError(await alice.request('GET', `/v3/sync?user_id=%40bob%00%3A${SERVER_NAME}`), 400, 'M_INVALID_PARAM');
    expect(await bobReceives()).toEqual([]);
  });

  it('refuses NUL and lone surrogates in user IDs, device IDs, keys and strings of sendToDevice bodies', async () => {
    for (const text of [
      `{"messages":{"@bob:${SERVER_NAME}":{"D\\u0000":{"n":1}}}}`,
      `{"messages":{"@bob\\u0000:${SERVER_NAME}":{"*":{"n":1}}}}`,
      toBob('{"k":"a\\u0000b"}'),
      toBob('{"k\\u0000":1}'),
      toBob('{"k":"\\ud800"}'),
      toBob('{"\\udc00":1}'),
      toBob('{"k":["x", {"deep":"\\ud83d then not a low surrogate"}]}'),
      `{"messages":{"@bob:${SERVER_NAME}":{"\\udfff":{"n":1}}}}`,
    ]) {
      const body = await expectMatrixError(await rawSend(text), 400, 'M_BAD_JSON');
      expect(body.error).toMatch(/NUL|surrogate/);
    }
    // A proper pair (an astral character written as escapes) is Unicode and goes through.
    expect((await rawSend(toBob('{"k":"\\ud83d\\ude00"}'))).status).toBe(200);
    expect(await bobReceives()).toEqual([{ sender: alice.userId, type: 'm.hostile', content: { k: '😀' } }]);
  });

  it('refuses NUL and lone surrogates in registration (username, device_id) without creating the user', async () => {
    const api = overHttp(http.baseUrl);
    for (const [username, deviceId] of [['carol', 'DEV\\u0000'], ['carol', '\\ud800'], ['car\\u0000ol', 'DEV'], ['carol\\udbff', 'DEV']] as const) {
      const res = await api.request('/_matrix/client/v3/register', {
        method: 'POST',
        body: `{"username":"${username}","password":"pw","device_id":"${deviceId}","auth":{"type":"m.login.dummy"}}`,
      });
      await expectMatrixError(res, 400, 'M_BAD_JSON');
    }
    const available = await api.request('/_matrix/client/v3/register/available?username=carol');
    expect(await available.json()).toEqual({ available: true });
    await expectMatrixError(await api.request('/_matrix/client/v3/register/available?username=car%00ol'), 400, 'M_INVALID_PARAM');
    // Login is checked the same way (the body is one shared check for every route).
    const login = await api.request('/_matrix/client/v3/login', {
      method: 'POST',
      body: `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"correct horse","device_id":"N\\u0000"}`,
    });
    await expectMatrixError(login, 400, 'M_BAD_JSON');
    const devices = (await (await alice.request('GET', '/v3/devices')).json()) as { devices: { device_id: string }[] };
    expect(devices.devices.map((d) => d.device_id)).toEqual([alice.deviceId]);
  });
});

describe('nesting and numbers', () => {
  it('answers content nested 100,000 deep with 400, not a 500', async () => {
    const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
    const body = await expectMatrixError(await rawSend(toBob(`{"d":${deep}}`)), 400, 'M_BAD_JSON');
    expect(body.error).toContain(`deeper than ${MAX_CLIENT_JSON_DEPTH}`);
    const deepObject = `${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}`;
    await expectMatrixError(await rawSend(toBob(deepObject)), 400, 'M_BAD_JSON');
    expect(await bobReceives()).toEqual([]);
  });

  it('takes content up to the documented depth and refuses one level more', async () => {
    // The body is level 1, messages 2, the user 3, the content object 4.
    const levels = MAX_CLIENT_JSON_DEPTH - 4;
    const nested = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
    expect((await rawSend(toBob(`{"d":${nested(levels)}}`))).status).toBe(200);
    await expectMatrixError(await rawSend(toBob(`{"d":${nested(levels + 1)}}`)), 400, 'M_BAD_JSON');
    expect(await bobReceives()).toHaveLength(1);
  });

  it('refuses 1.0, 1e2, -0 and 1.5 alike (canonical JSON allows only integers), and takes integers', async () => {
    for (const n of ['1.0', '1e2', '1E+2', '-0', '1.5', '-0.0', '0e0']) {
      const body = await expectMatrixError(await rawSend(toBob(`{"n":${n}}`)), 400, 'M_BAD_JSON');
      expect(body.error).toMatch(/integers/);
    }
    // The same characters inside strings are text, not numbers.
    expect((await rawSend(toBob('{"n":-10,"m":0,"s":"1.0 1e2 -0","t":true,"f":false}'))).status).toBe(200);
    expect(await bobReceives()).toEqual([{ sender: alice.userId, type: 'm.hostile', content: { n: -10, m: 0, s: '1.0 1e2 -0', t: true, f: false } }]);
  });
});

describe('access tokens', () => {
  it('refuses different tokens in the Authorization header and ?access_token=, and sends nothing', async () => {
    const res = await overHttp(http.baseUrl).request(`/_matrix/client/v3/sendToDevice/m.hostile/mix1?access_token=${bob.token}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${alice.token}` },
      body: toBob('{"n":1}'),
    });
    const body = await expectMatrixError(res, 401, 'M_MISSING_TOKEN');
    expect(body.error).toMatch(/Mixing Authorization headers and access_token/);
    expect(await bobReceives()).toEqual([]);
    // The same token in both places is one token.
    const same = await overHttp(http.baseUrl).request(`/_matrix/client/v3/sendToDevice/m.hostile/mix2?access_token=${alice.token}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${alice.token}` },
      body: toBob('{"n":2}'),
    });
    expect(same.status).toBe(200);
    expect(await bobReceives()).toHaveLength(1);
  });
});

describe('federation EDUs', () => {
  let txn = 0;
  async function sendTxn(edus: unknown[]): Promise<{ status: number; body: unknown }> {
    const uri = `/_matrix/federation/v1/send/h${++txn}`;
    const full = { origin: EVIL, origin_server_ts: Date.now(), pdus: [], edus };
    const res = await fetch(`${http.baseUrl}${uri}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', authorization: fake.authorization('PUT', uri, SERVER_NAME, full) },
      body: JSON.stringify(full),
    });
    return { status: res.status, body: await res.json() };
  }
  const edu = (messageId: string, messages: Record<string, Record<string, unknown>>, sender = `@mallory:${EVIL}`) => ({
    edu_type: 'm.direct_to_device',
    content: { sender, type: 'm.fed', message_id: messageId, messages },
  });

  it('rejects an EDU with NUL or lone surrogates alone; the others of its transaction are delivered', async () => {
    const before = t.services.counters.get('federation_edus_rejected_total', { reason: 'bad_text' });
    const res = await sendTxn([
      edu('bad1', { [bob.userId]: { [bob.deviceId]: { k: 'a\u0000b' } } }),
      edu('bad2', { [bob.userId]: { '\ud800': { k: 1 } } }),
      edu('bad3', { [bob.userId]: { '*': { ['\udc00']: 1 } } }),
      edu('bad\u00004', { [bob.userId]: { '*': { k: 1 } } }),
      edu('good', { [bob.userId]: { [bob.deviceId]: { ok: true } } }),
    ]);
    expect(res).toEqual({ status: 200, body: { pdus: {} } });
    expect(await bobReceives()).toEqual([{ sender: `@mallory:${EVIL}`, type: 'm.fed', content: { ok: true } }]);
    expect(t.services.counters.get('federation_edus_rejected_total', { reason: 'bad_text' })).toBe(before + 4);
  });

  it('answers a transaction nested 100,000 deep with 400, not a 500', async () => {
    const uri = `/_matrix/federation/v1/send/deep`;
    const res = await fetch(`${http.baseUrl}${uri}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', authorization: fake.authorization('PUT', uri, SERVER_NAME, {}) },
      body: `{"origin":"${EVIL}","pdus":[],"edus":[${'['.repeat(100_000)}${']'.repeat(100_000)}]}`,
    });
    await expectMatrixError(res, 400, 'M_BAD_JSON');
  });
});

describe('over-long request headers (the real server process)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tds-hostile-'));
  let server: ServerProcess;
  let fedPort: number;

  beforeAll(async () => {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
      '-subj', '/CN=hostile.test', '-addext', 'subjectAltName=DNS:hostile.test',
    ], { stdio: 'ignore' });
    const [port, fp] = await Promise.all([freePort(), freePort()]);
    fedPort = fp;
    server = await ServerProcess.create('hostile.test', port, {
      federation: { listen: { host: '127.0.0.1', port: fedPort, tls_cert: join(dir, 'cert.pem'), tls_key: join(dir, 'key.pem') } },
    });
    await server.start();
  }, 90_000);
  afterAll(async () => {
    await server?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Writes a request with a 64 KiB header and reads the whole answer. */
  function oversized(socket: ReturnType<typeof netConnect>): Promise<string> {
    return new Promise((resolve, reject) => {
      let answer = '';
      socket.on('data', (d: Buffer) => (answer += d.toString()));
      socket.on('close', () => resolve(answer));
      socket.on('error', (e) => (answer === '' ? reject(e) : resolve(answer)));
      socket.write(`GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`);
    });
  }

  function expect431(answer: string): void {
    const [head, body] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 431 /);
    expect(head?.toLowerCase()).toContain('content-type: application/json');
    expect(JSON.parse(body ?? '')).toEqual({ errcode: 'M_TOO_LARGE', error: 'Request headers are too large' });
  }

  it('answers 431 with a Matrix error body on the client listener', async () => {
    const url = new URL(server.baseUrl);
    const socket = netConnect(Number(url.port), url.hostname);
    await new Promise((r) => socket.once('connect', r));
    expect431(await oversized(socket));
    // And the server keeps serving.
    expect((await fetch(`${server.baseUrl}/_matrix/client/versions`)).status).toBe(200);
  });

  it('answers 431 with a Matrix error body on the federation TLS listener', async () => {
    const socket = tlsConnect({ host: '127.0.0.1', port: fedPort, servername: 'hostile.test', rejectUnauthorized: false });
    await new Promise((r) => socket.once('secureConnect', r));
    expect431(await oversized(socket as unknown as ReturnType<typeof netConnect>));
  });
});
