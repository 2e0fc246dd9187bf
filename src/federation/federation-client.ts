import http from 'node:http';
import https from 'node:https';
import { rootCertificates } from 'node:tls';
import { canonicalJson } from '../shared/canonical-json.ts';
import type { SigningKey } from '../shared/ed25519.ts';
import { PeerRequestError } from '../shared/peer-request-error.ts';
import { signatureOf } from './json-signing.ts';
import type { ServerDiscovery } from './server-discovery.ts';
import { formatXMatrix } from './x-matrix.ts';

export interface FederationResponse {
  status: number;
  json: unknown;
}

/** A federation request that failed on this side's terms (timed out, answer too large). */
export class FederationRequestError extends PeerRequestError {}

export interface FederationClientOptions {
  serverName: string;
  signingKey: SigningKey;
  discovery: ServerDiscovery;
  /** Extra trusted CA certificates (PEM), added to the system's. */
  extraCa?: string;
  timeoutMs?: number;
}

const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

/** Signed server-server requests (spec "Request Authentication"), over keep-alive connections. */
export class FederationClient {
  private readonly httpsAgent: https.Agent;
  private readonly httpAgent = new http.Agent({ keepAlive: true, maxSockets: 16 });

  constructor(private readonly opts: FederationClientOptions) {
    this.httpsAgent = new https.Agent({
      keepAlive: true,
      maxSockets: 16,
      ...(opts.extraCa === undefined ? {} : { ca: [...rootCertificates, opts.extraCa] }),
    });
  }

  /** A request to another server's federation API, signed with X-Matrix unless `signed` is false. */
  async request(destination: string, method: string, path: string, body?: unknown, signed = true): Promise<FederationResponse> {
    const target = await this.opts.discovery.resolve(destination);
    const headers: Record<string, string> = { host: target.host };
    if (signed) {
      const toSign: Record<string, unknown> = { method, uri: path, origin: this.opts.serverName, destination };
      if (body !== undefined) toSign.content = body;
      headers.authorization = formatXMatrix({
        origin: this.opts.serverName,
        destination,
        key: this.opts.signingKey.keyId,
        sig: signatureOf(toSign, this.opts.signingKey),
      });
    }
    const payload = body === undefined ? undefined : canonicalJson(body);
    if (payload !== undefined) headers['content-type'] = 'application/json';
    return this.send(new URL(path, `${target.baseUrl}/`), method, headers, payload, target.tlsServerName);
  }

  /** `/.well-known/matrix/server` of a host (server discovery); null when there is none. */
  async fetchWellKnown(host: string, allowHttp: boolean): Promise<unknown> {
    const url = new URL(`${allowHttp ? 'http' : 'https'}://${host}/.well-known/matrix/server`);
    const res = await this.send(url, 'GET', {}, undefined, host);
    return res.status === 200 ? res.json : null;
  }

  private send(url: URL, method: string, headers: Record<string, string>, payload: string | undefined, servername: string): Promise<FederationResponse> {
    const isHttps = url.protocol === 'https:';
    const mod = isHttps ? https : http;
    return new Promise((resolve, reject) => {
      // A refused or reset connection is the destination's failure, not the database's (see PeerRequestError).
      const fail = (e: unknown) => reject(PeerRequestError.from(`${method} ${url.origin}${url.pathname}`, e));
      const req = mod.request(
        url,
        {
          method,
          headers: payload === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(payload)) },
          agent: isHttps ? this.httpsAgent : this.httpAgent,
          timeout: this.opts.timeoutMs ?? 30_000,
          ...(isHttps && servername !== '' ? { servername } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_RESPONSE_BYTES) req.destroy(new FederationRequestError('response too large'));
            else chunks.push(chunk);
          });
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            resolve({ status: res.statusCode ?? 0, json: parseOrNull(text) });
          });
          res.on('error', fail);
        },
      );
      req.on('timeout', () => req.destroy(new FederationRequestError(`timed out: ${method} ${url.origin}${url.pathname}`)));
      req.on('error', fail);
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }

  close(): void {
    this.httpsAgent.destroy();
    this.httpAgent.destroy();
  }
}

function parseOrNull(text: string): unknown {
  try {
    return text === '' ? null : JSON.parse(text);
  } catch {
    return null;
  }
}
