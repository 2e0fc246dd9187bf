import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import type { TestApp } from './test-app.ts';

/** Serves a test app over real HTTP on a free loopback port. */
export async function serveOverHttp(t: Pick<TestApp, 'app'>, port = 0): Promise<{ baseUrl: string; close(): Promise<void> }> {
  return new Promise((resolve) => {
    const server = serve({ fetch: t.app.fetch, hostname: '127.0.0.1', port }, (info: AddressInfo) => {
      resolve({
        baseUrl: `http://127.0.0.1:${info.port}`,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            // Long-polls still open would hold close() for their whole timeout.
            (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
          }),
      });
    });
  });
}
