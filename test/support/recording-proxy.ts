import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ProxiedRequest {
  method: string;
  url: string;
  body: unknown;
  status: number;
  /** When the request had arrived (Date.now()). */
  receivedAt: number;
}

/**
 * A loopback HTTP proxy that forwards to `target` and records each request with the status the
 * target answered (502 when the target is down), so tests can look at what a sender sent. A
 * function target is asked at each request: the server behind can move to another port.
 */
export async function startRecordingProxy(target: string | (() => string), port = 0): Promise<{ baseUrl: string; requests: ProxiedRequest[]; close(): Promise<void> }> {
  const requests: ProxiedRequest[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const receivedAt = Date.now();
      const raw = Buffer.concat(chunks);
      const record = (status: number) => {
        requests.push({ method: req.method ?? 'GET', url: req.url ?? '', body: parseBody(raw), status, receivedAt });
      };
      const headers: Record<string, string> = {};
      for (const k of ['authorization', 'content-type']) {
        const v = req.headers[k];
        if (typeof v === 'string') headers[k] = v;
      }
      const base = typeof target === 'function' ? target() : target;
      fetch(`${base}${req.url}`, { method: req.method ?? 'GET', headers, ...(raw.length > 0 ? { body: raw } : {}) }).then(
        async (r) => {
          record(r.status);
          res.writeHead(r.status, { 'content-type': 'application/json' }).end(Buffer.from(await r.arrayBuffer()));
        },
        () => {
          record(502);
          res.writeHead(502, { 'content-type': 'application/json' }).end('{"errcode":"M_UNKNOWN","error":"target down"}');
        },
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function parseBody(raw: Buffer): unknown {
  if (raw.length === 0) return null;
  try {
    return JSON.parse(raw.toString());
  } catch {
    return raw.toString();
  }
}
