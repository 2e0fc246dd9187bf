import http from 'node:http';
import https from 'node:https';
import { PeerRequestError } from '../shared/peer-request-error.ts';

/** Where a transaction goes; an appservice with a `url`. */
export interface AppserviceTarget {
  id: string;
  url: string;
  hsToken: string;
}

/**
 * The HTTP side of pushing to an appservice: one `PUT /_matrix/app/v1/transactions/{txnId}`.
 * A class of its own so the transport can be timed (TimedAppserviceClient) without the sender
 * knowing about metrics, as the federation client is.
 *
 * On `node:http` with keep-alive agents, as the federation client: a busy stream sends a
 * transaction every few milliseconds, and `fetch` (undici, web streams, an abort signal and its
 * timer per request) cost several times the request itself (S7 bench profile: undici's own code
 * and writes were an eighth of the server's busy time).
 */
export class AppserviceClient {
  // Transactions to one appservice go one at a time (the sender's queue lease); a few sockets
  // cover several appservices behind one host.
  private readonly httpAgent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  private readonly httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 4 });

  /** `timeoutMs`: how long the appservice may stay silent, connecting or answering, before the send fails. */
  constructor(private readonly timeoutMs = 30_000) {}

  /** Sends one stored transaction body as is; answers the HTTP status. Throws a PeerRequestError on network errors and timeouts. */
  putTransaction(as: AppserviceTarget, txnId: string, body: string): Promise<number> {
    const url = new URL(`${as.url.replace(/\/$/, '')}/_matrix/app/v1/transactions/${encodeURIComponent(txnId)}`);
    const isHttps = url.protocol === 'https:';
    return new Promise((resolve, reject) => {
      // A refused or reset connection is the appservice's failure, not the database's (see PeerRequestError).
      const fail = (e: unknown) => reject(PeerRequestError.from(`appservice ${as.id}: PUT ${url.origin}${url.pathname}`, e));
      const req = (isHttps ? https : http).request(
        url,
        {
          method: 'PUT',
          headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), authorization: `Bearer ${as.hsToken}` },
          agent: isHttps ? this.httpsAgent : this.httpAgent,
          timeout: this.timeoutMs,
        },
        (res) => {
          // The body is never read, only drained, so the socket goes back to the agent for the next transaction.
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
          res.on('error', fail);
        },
      );
      req.on('timeout', () => req.destroy(new PeerRequestError(`appservice ${as.id}: no answer within ${this.timeoutMs} ms`)));
      req.on('error', fail);
      req.end(body);
    });
  }

  /** Closes the kept-alive connections (shutdown). */
  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
}
