import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { EDUS_IN_ORDER_FIELD } from '../../src/federation/receiver-order.ts';

interface Edu {
  edu_type: string;
  content: { sender: string; messages: Record<string, Record<string, unknown>> };
}

/** What the receiver stored for one device, in the order it stored it. */
export interface Stored {
  sender: string;
  content: Record<string, unknown>;
}

/**
 * A homeserver that takes federation transactions as Synapse does: it applies a transaction's
 * EDUs in a random order (Synapse runs them concurrently, 10 at a time), and answers 200 only
 * once all are stored. `claimInOrder` makes it say in `/version` that it applies them in order
 * (a lie, for showing that the sender believes the answer). It can be taken down and brought
 * back on the same port.
 */
export class ReorderingReceiver {
  private server: Server | null = null;
  private port = 0;
  readonly stored = new Map<string, Stored[]>();
  /** Per transaction: how many messages it carried for each `user device`. */
  readonly transactions: Map<string, number>[] = [];

  constructor(private readonly claimInOrder = false) {}

  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.method === 'GET' && req.url === '/_matrix/federation/v1/version') {
          const body = { server: { name: 'reordering-receiver', version: '1' }, ...(this.claimInOrder ? { [EDUS_IN_ORDER_FIELD]: true } : {}) };
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
          return;
        }
        if (req.method === 'PUT' && req.url?.startsWith('/_matrix/federation/v1/send/') === true) {
          const txn = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { edus: Edu[] };
          const counts = new Map<string, number>();
          for (const edu of shuffled(txn.edus)) {
            if (edu.edu_type !== 'm.direct_to_device') continue;
            for (const [user, byDevice] of Object.entries(edu.content.messages)) {
              for (const [device, content] of Object.entries(byDevice)) {
                const key = `${user} ${device}`;
                counts.set(key, (counts.get(key) ?? 0) + 1);
                const list = this.stored.get(key) ?? [];
                list.push({ sender: edu.content.sender, content: content as Record<string, unknown> });
                this.stored.set(key, list);
              }
            }
          }
          this.transactions.push(counts);
          res.writeHead(200, { 'content-type': 'application/json' }).end('{"pdus":{}}');
          return;
        }
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}');
      });
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Down: connections are refused until `start` again. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (server === null) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

function shuffled<T>(items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}
