import { performance } from 'node:perf_hooks';
import { AppserviceClient, type AppserviceTarget } from '../appservice/appservice-client.ts';
import { APPSERVICE_SEND_SECONDS, type Counters } from './counters.ts';

/**
 * The appservice client, timing transaction sends per appservice
 * (`appservice_send_duration_seconds{appservice, outcome}`; outcome `ok` for a 2xx, else `error`,
 * which includes network errors and timeouts).
 */
export class TimedAppserviceClient extends AppserviceClient {
  constructor(
    private readonly counters: Counters,
    timeoutMs?: number,
  ) {
    super(timeoutMs);
  }

  override async putTransaction(as: AppserviceTarget, txnId: string, body: string): Promise<number> {
    const started = performance.now();
    let outcome = 'error';
    try {
      const status = await super.putTransaction(as, txnId, body);
      if (status >= 200 && status < 300) outcome = 'ok';
      return status;
    } finally {
      this.counters.observe(APPSERVICE_SEND_SECONDS, { appservice: as.id, outcome }, (performance.now() - started) / 1000);
    }
  }
}
