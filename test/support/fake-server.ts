import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { encodeBase64 } from '../../src/shared/base64.ts';
import { signingKeyFromSeed, type SigningKey } from '../../src/shared/ed25519.ts';
import { signatureOf, signJson } from '../../src/federation/json-signing.ts';
import { formatXMatrix } from '../../src/federation/x-matrix.ts';

/**
 * Another homeserver, played by the test over real HTTP: it serves its signed key at
 * /_matrix/key/v2/server and signs the federation requests the test sends as it.
 */
export class FakeServer {
  readonly key: SigningKey;
  private server: Server | null = null;
  baseUrl = '';
  /** Answers other requests (its federation API as the test plays it); null → 404. */
  answer: ((method: string, url: string, body: unknown) => { status: number; json: unknown; delayMs?: number } | null) | null = null;

  constructor(
    readonly serverName: string,
    seedByte = 42,
  ) {
    this.key = signingKeyFromSeed('ed25519:fake', Buffer.alloc(32, seedByte));
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/_matrix/key/v2/server') {
        const body = signJson(
          {
            server_name: this.serverName,
            verify_keys: { [this.key.keyId]: { key: encodeBase64(this.key.publicKey) } },
            old_verify_keys: {},
            valid_until_ts: Date.now() + 3600_000,
          },
          this.serverName,
          this.key,
        );
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
        return;
      }
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        const answer = this.answer?.(req.method ?? 'GET', req.url ?? '/', text === '' ? undefined : (JSON.parse(text) as unknown)) ?? null;
        if (answer === null) {
          res.writeHead(404, { 'content-type': 'application/json' }).end('{"errcode":"M_UNRECOGNIZED","error":"no"}');
          return;
        }
        const send = () => {
          if (!res.destroyed) res.writeHead(answer.status, { 'content-type': 'application/json' }).end(JSON.stringify(answer.json));
        };
        if (answer.delayMs === undefined) send();
        else setTimeout(send, answer.delayMs).unref();
      });
    });
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve));
    this.baseUrl = `http://127.0.0.1:${(this.server?.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server === null ? resolve() : this.server.close(() => resolve())));
  }

  /** The Authorization header for a request from this server. */
  authorization(method: string, uri: string, destination: string, content?: unknown, opts: { signWith?: SigningKey; claimDestination?: string } = {}): string {
    const toSign: Record<string, unknown> = { method, uri, origin: this.serverName, destination };
    if (content !== undefined) toSign.content = content;
    return formatXMatrix({
      origin: this.serverName,
      destination: opts.claimDestination ?? destination,
      key: this.key.keyId,
      sig: signatureOf(toSign, opts.signWith ?? this.key),
    });
  }
}
