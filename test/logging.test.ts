import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import ping from '../handlers/ping/index.ts';
import { createApp, type App } from '../src/app.ts';
import { parseConfig } from '../src/config/config.ts';
import { loadOwnSigningKey } from '../src/federation/own-signing-key.ts';
import { createLogger } from '../src/logger.ts';
import type { HandlerModule } from '../src/sdk/define-handler.ts';
import type { Database } from '../src/storage/drivers/database.ts';
import { TestClient } from './support/client.ts';
import { serveOverHttp } from './support/http-server.ts';
import { SERVER_NAME } from './support/test-app.ts';
import { createTestDatabase } from './support/test-database.ts';

const PASSWORD = 'pw-never-logged-7c1f';
const CONTENT_MARKER = 'content-never-logged-93ad';
const NONCE_MARKER = 'nonce-never-logged-5e02';

const lines: string[] = [];
let database: Database;
let built: App;

beforeAll(async () => {
  database = await createTestDatabase();
  built = createApp({
    config: parseConfig({ server_name: SERVER_NAME }),
    database,
    log: createLogger('debug', {}, (line) => lines.push(line)),
    handlers: [{ module: ping as HandlerModule<unknown> }],
    signingKey: await loadOwnSigningKey(database.db),
  });
  await built.start();
});

afterAll(async () => {
  await built?.stop();
  await database?.close();
});

describe('logs', () => {
  it('write one JSON line per request with id, status and duration, and never a token, password or message content', async () => {
    const app = built.app;
    let requests = 0;
    const count = <T>(p: T | Promise<T>): Promise<T> => {
      requests++;
      return Promise.resolve(p);
    };
    const alice = await count(TestClient.register(app, 'alice', { password: PASSWORD }));
    const bob = await count(TestClient.register(app, 'bob', { password: PASSWORD }));
    const bob2 = await count(TestClient.login(app, 'bob', { password: PASSWORD }));
    await count(alice.sendToDevice('m.secret', { [bob.userId]: { '*': { secret: CONTENT_MARKER } } }));
    await count(alice.sendToDevice('org.example.ping', { [`@:${SERVER_NAME}`]: { '': { nonce: NONCE_MARKER } } }));
    // The deprecated query-string token, a bad token, a bad password, a malformed body.
    const synced = await count(app.request(`/_matrix/client/v3/sync?access_token=${bob.token}`));
    expect(JSON.stringify(await synced.json())).toContain(CONTENT_MARKER);
    await count(app.request('/_matrix/client/v3/sync', { headers: { authorization: `Bearer ${bob2.token}x` } }));
    await count(
      app.request('/_matrix/client/v3/login', {
        method: 'POST',
        body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'bob' }, password: `${PASSWORD}-wrong` }),
      }),
    );
    await count(alice.request('PUT', '/v3/sendToDevice/m.x/t-bad', `{"messages": {"${CONTENT_MARKER}`));
    const health = await count(app.request('/health'));
    await count(alice.request('POST', '/v3/logout'));

    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const requestLines = parsed.filter((l) => l.msg === 'request');
    expect(requestLines).toHaveLength(requests);
    for (const l of requestLines) {
      expect(l).toMatchObject({ level: expect.any(String), time: expect.any(String), requestId: expect.any(String), method: expect.any(String), path: expect.any(String), status: expect.any(Number), durationMs: expect.any(Number) });
    }
    // The id is the one the response carries; probes are logged at debug level.
    const healthLine = requestLines.find((l) => l.path === '/health');
    expect(healthLine).toMatchObject({ level: 'debug', status: 200, requestId: health.headers.get('x-request-id') });
    expect(requestLines.find((l) => l.path === '/_matrix/client/v3/sync' && l.status === 200)).toMatchObject({ level: 'info', userId: bob.userId, deviceId: bob.deviceId });
    expect(requestLines.filter((l) => l.status === 401 || l.status === 403).length).toBeGreaterThanOrEqual(2);

    const all = lines.join('\n');
    for (const secret of [alice.token, bob.token, bob2.token, PASSWORD, CONTENT_MARKER, NONCE_MARKER]) expect(all).not.toContain(secret);
  });

  it('logs the user of a long-poll served over real HTTP, and leaves a caller\'s bindings unchanged', async () => {
    const carol = await TestClient.register(built.app, 'carol', { password: PASSWORD });
    const initial = await carol.sync();
    const http = await serveOverHttp(built);
    try {
      const res = await fetch(`${http.baseUrl}/_matrix/client/v3/sync?since=${initial.next_batch}&timeout=50`, { headers: { authorization: `Bearer ${carol.token}` } });
      expect(res.status).toBe(200);
      const id = res.headers.get('x-request-id');
      const line = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'request' && l.requestId === id);
      expect(line).toMatchObject({ path: '/_matrix/client/v3/sync', status: 200, userId: carol.userId, deviceId: carol.deviceId });
    } finally {
      await http.close();
    }
    // A bindings object passed to app.request is the caller's: copied, not written to.
    const env = { shared: true };
    const res = await built.app.request('/_matrix/client/versions', {}, env);
    expect(res.status).toBe(200);
    expect(env).toEqual({ shared: true });
  });

  it('redacts secret-looking fields whoever logs them', () => {
    const out: string[] = [];
    const log = createLogger('info', { component: 'x' }, (l) => out.push(l));
    log.info('careless', { access_token: 'tok-1', body: { password: 'pw-1', content: { a: 'c-1' } }, authorization: 'Bearer tok-2' });
    log.child({ handler: 'h' }).warn('nested', { messages: { '@u:x': { D: { a: 'c-2' } } } });
    log.debug('below the level', { n: 1 });
    expect(out).toHaveLength(2);
    for (const secret of ['tok-1', 'tok-2', 'pw-1', 'c-1', 'c-2']) expect(out.join('\n')).not.toContain(secret);
    expect(JSON.parse(out[1] as string)).toMatchObject({ level: 'warn', msg: 'nested', component: 'x', handler: 'h' });
  });
});
