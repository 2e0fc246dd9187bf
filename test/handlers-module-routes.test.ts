import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Hono } from 'hono';
import * as v from 'valibot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRouter, defineHandler, MatrixError, type HandlerModule, type ModuleRouteEnv } from '../src/sdk/index.ts';
import { testModule } from '../src/testing/index.ts';
import { TestClient } from './support/client.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

/** A module with routes only: what a handler author would write to expose HTTP endpoints. */
function withRoutes(name: string, namespace: string): HandlerModule<unknown> {
  return defineHandler({
    name,
    config: v.object({ greeting: v.optional(v.string(), 'hello') }),
    events: {},
    routes: {
      namespace,
      build(ctx) {
        const r = new Hono<ModuleRouteEnv>();
        r.get('/whoami', (c) => c.json({ greeting: ctx.config.greeting, ...c.get('user'), server_user: ctx.serverUserId }));
        r.get('/broken', () => {
          throw new Error('a bug in the module');
        });
        return r;
      },
    },
  }) as HandlerModule<unknown>;
}

describe('handler module routes', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({}, [{ module: withRoutes('greeter', 'org.example.greeter'), config: { greeting: 'hi' } }]);
  });
  afterAll(() => t.close());

  it('mounts them under /unstable/<namespace>/ with the module context and the authenticated user', async () => {
    const alice = await TestClient.register(t.app, 'alice');
    expect(await alice.json('GET', '/unstable/org.example.greeter/whoami')).toEqual({
      status: 200,
      body: { greeting: 'hi', userId: alice.userId, deviceId: alice.deviceId, server_user: '@:test.local' },
    });
    const anonymous = await t.app.request('/_matrix/client/unstable/org.example.greeter/whoami');
    expect(anonymous.status).toBe(401);
    expect(await anonymous.json()).toMatchObject({ errcode: 'M_MISSING_TOKEN' });
  });

  it('answers a route that throws with a Matrix 500, never the error itself', async () => {
    const alice = await TestClient.register(t.app, 'bob');
    expect(await alice.json('GET', '/unstable/org.example.greeter/broken')).toEqual({ status: 500, body: { errcode: 'M_UNKNOWN', error: 'Internal server error' } });
  });

  it('answers a MatrixError thrown in a module that resolved a copy of hono of its own as core routes do, in the server and the kit', async () => {
    // A module package installed with its own hono: a second copy of the library, as npm makes it.
    const copy = mkdtempSync(join(tmpdir(), 'tds-hono-copy-'));
    try {
      const honoDir = fileURLToPath(new URL('../node_modules/hono', import.meta.url));
      cpSync(honoDir, join(copy, 'node_modules', 'hono'), { recursive: true });
      const { Hono: OtherHono } = (await import(pathToFileURL(join(copy, 'node_modules', 'hono', 'dist', 'index.js')).href)) as { Hono: typeof Hono };
      expect(OtherHono).not.toBe(Hono);
      const foreign = defineHandler({
        name: 'foreign',
        events: {},
        routes: {
          namespace: 'org.example.foreign',
          build() {
            const r = new OtherHono<ModuleRouteEnv>();
            r.get('/missing', () => {
              throw new MatrixError('M_NOT_FOUND', 'No such counter');
            });
            return r;
          },
        },
      });
      const server = await startTestApp({}, [{ module: foreign }]);
      try {
        const carol = await TestClient.register(server.app, 'carol');
        expect(await carol.json('GET', '/unstable/org.example.foreign/missing')).toEqual({ status: 404, body: { errcode: 'M_NOT_FOUND', error: 'No such counter' } });
      } finally {
        await server.close();
      }
      const kit = await testModule(foreign);
      const res = await kit.request('/missing');
      expect({ status: res.status, body: await res.json() }).toEqual({ status: 404, body: { errcode: 'M_NOT_FOUND', error: 'No such counter' } });
      await kit.close();
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  it("hands modules a router of the server's own hono (createRouter)", () => {
    expect(createRouter()).toBeInstanceOf(Hono);
  });

  it('refuses at start a namespace that is not reverse-DNS, or one two modules claim', async () => {
    await expect(startTestApp({}, [{ module: withRoutes('a', '../escape') }])).rejects.toThrow(/namespace "\.\.\/escape" is not a reverse-DNS name/);
    await expect(startTestApp({}, [{ module: withRoutes('a', 'org.example.x') }, { module: withRoutes('b', 'org.example.x') }])).rejects.toThrow(
      /routes namespace "org\.example\.x" is claimed by both "a" and "b"/,
    );
  });
});
