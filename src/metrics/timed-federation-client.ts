import { performance } from 'node:perf_hooks';
import { FederationClient, type FederationClientOptions, type FederationResponse } from '../federation/federation-client.ts';
import { FEDERATION_SEND_SECONDS, type Counters } from './counters.ts';

const SEND_PATH = '/_matrix/federation/v1/send/';

/**
 * The federation client, timing transaction sends per destination
 * (`federation_send_duration_seconds{destination, outcome}`; outcome `ok` for a 200, else `error`).
 */
export class TimedFederationClient extends FederationClient {
  constructor(
    opts: FederationClientOptions,
    private readonly counters: Counters,
  ) {
    super(opts);
  }

  override async request(destination: string, method: string, path: string, body?: unknown, signed = true): Promise<FederationResponse> {
    if (!path.startsWith(SEND_PATH)) return super.request(destination, method, path, body, signed);
    const started = performance.now();
    let outcome = 'error';
    try {
      const res = await super.request(destination, method, path, body, signed);
      if (res.status === 200) outcome = 'ok';
      return res;
    } finally {
      this.counters.observe(FEDERATION_SEND_SECONDS, { destination, outcome }, (performance.now() - started) / 1000);
    }
  }
}
