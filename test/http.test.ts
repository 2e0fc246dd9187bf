import { usingPostgres } from './support/test-database.ts';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERRCODE_STATUS } from '../src/errors/errcodes.ts';
import { CORS_HEADERS } from '../src/rest/cors.ts';
import { TestClient } from './support/client.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

let t: TestApp;

beforeAll(async () => {
  t = await startTestApp();
});
afterAll(() => t.close());

describe('HTTP surface', () => {
  it('answers unknown routes with 404 M_UNRECOGNIZED', async () => {
    const res = await t.app.request('/_matrix/client/v3/nonsense');
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ errcode: 'M_UNRECOGNIZED', error: expect.any(String) });
  });

  it('answers a known route with the wrong method with 405 M_UNRECOGNIZED', async () => {
    const res = await t.app.request('/_matrix/client/v3/sync', { method: 'DELETE' });
    expect(res.status).toBe(405);
    expect(await res.json()).toMatchObject({ errcode: 'M_UNRECOGNIZED' });
    const put = await t.app.request('/_matrix/client/v3/sendToDevice/m.x/1', { method: 'GET' });
    expect(put.status).toBe(405);
  });

  it('answers CORS preflights for web clients', async () => {
    const res = await t.app.request('/_matrix/client/v3/sync', {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example', 'access-control-request-method': 'GET' },
    });
    expect(res.status).toBe(204);
    for (const [name, value] of Object.entries(CORS_HEADERS)) expect(res.headers.get(name)).toBe(value);
    // Answered before any route, yet inside the request log: it has an id like any answer.
    expect(res.headers.get('x-request-id')).toMatch(/^[\w-]{8,}$/);
  });

  it('keeps CORS to the Matrix endpoints', async () => {
    const res = await t.app.request('/health');
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    expect(res.headers.get('x-request-id')).toMatch(/^[\w-]{8,}$/);
  });

  it('puts the CORS headers and a request id on answers, errors and unknown routes alike', async () => {
    const u = await TestClient.register(t.app, 'cors');
    const answers = [
      await u.request('GET', '/v3/sync'),
      await t.app.request('/_matrix/client/v3/sync'),
      await t.app.request('/_matrix/client/v3/nonsense'),
      await t.app.request('/_matrix'),
      await u.request('PUT', '/v3/sendToDevice/m.x/1', { messages: 'not an object' }),
    ];
    expect(answers.map((r) => r.status)).toEqual([200, 401, 404, 404, 400]);
    const ids = new Set<string>();
    for (const res of answers) {
      for (const [name, value] of Object.entries(CORS_HEADERS)) expect(res.headers.get(name)).toBe(value);
      ids.add(res.headers.get('x-request-id') ?? '');
    }
    expect(ids.size).toBe(answers.length);
    expect([...ids].every((id) => /^[\w-]{8,}$/.test(id))).toBe(true);
  });

  it('runs /sync and sendToDevice without middleware, and still refuses %00 with a Matrix error carrying CORS headers', async () => {
    // With a middleware on the path Hono runs the route through compose, whose frames a parked
    // long-poll would keep for minutes (src/rest/request-log.ts).
    for (const [method, path] of [
      ['GET', '/_matrix/client/v3/sync'],
      ['PUT', '/_matrix/client/v3/sendToDevice/m.x/1'],
    ] as const) {
      expect(t.app.router.match(method, path)[0]).toHaveLength(1);
    }
    const res = await t.app.request('/_matrix/client/v3/sync?since=%00');
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ errcode: 'M_INVALID_PARAM', error: expect.any(String) });
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    expect(res.headers.get('x-request-id')).toBeTruthy();
  });

  it('answers an unexpected failure with 500 M_UNKNOWN and no internals', async () => {
    const broken = await startTestApp();
    const u = await TestClient.register(broken.app, 'u');
    await broken.database.close();
    const res = await u.request('GET', '/v3/sync');
    const body = (await res.json()) as Record<string, unknown>;
    if (usingPostgres()) {
      // postgres.js says its connections were ended: the database is unavailable, which is 503.
      expect(res.status).toBe(503);
      expect(body).toEqual({ errcode: 'M_UNKNOWN', error: 'The database is temporarily unavailable; try again', retry_after_ms: 2000 });
    } else {
      expect(res.status).toBe(500);
      expect(body).toEqual({ errcode: 'M_UNKNOWN', error: 'Internal server error' });
    }
  });

  it('documents every errcode it can answer in docs/client-api.md', () => {
    const reference = readFileSync(new URL('../docs/client-api.md', import.meta.url), 'utf8');
    const undocumented = Object.keys(ERRCODE_STATUS).filter((code) => !new RegExp(`\\|\\s*\`${code}\`\\s*\\|`).test(reference));
    expect(undocumented).toEqual([]);
  });
});
