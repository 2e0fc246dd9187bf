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
 */
export class AppserviceClient {
  constructor(private readonly timeoutMs = 30_000) {}

  /** Sends one stored transaction body as is; answers the HTTP status. Throws on network errors. */
  async putTransaction(as: AppserviceTarget, txnId: string, body: string): Promise<number> {
    const url = `${as.url.replace(/\/$/, '')}/_matrix/app/v1/transactions/${encodeURIComponent(txnId)}`;
    const res = await fetch(url, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${as.hsToken}` },
      body,
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    // The body is never read: free the socket for the next transaction.
    await res.body?.cancel();
    return res.status;
  }
}
