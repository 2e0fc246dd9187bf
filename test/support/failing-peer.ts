import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A homeserver that is up but fails every transaction: it answers `GET
 * /_matrix/federation/v1/version` as Synapse does and `500 M_UNKNOWN` to everything else. So a
 * sender builds a transaction, sends it, and keeps it for the retry. (A destination that does
 * not answer at all backs off before any transaction is built.)
 */
export async function startFailingPeer(): Promise<{ baseUrl: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.method === 'GET' && req.url === '/_matrix/federation/v1/version') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"server":{"name":"failing-peer","version":"1"}}');
      } else {
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"errcode":"M_UNKNOWN","error":"Internal server error"}');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
