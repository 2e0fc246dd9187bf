import type { FederationClient } from './federation-client.ts';

/**
 * The field of our `GET /_matrix/federation/v1/version` answer that says this server applies a
 * transaction's EDUs in order (in one statement, stream ids drawn in EDU order). A sender that reads it may put several
 * messages for one device into one transaction; every other receiver (Synapse applies EDUs
 * concurrently, 10 at a time) gets at most one per (sender, device).
 */
export const EDUS_IN_ORDER_FIELD = 'org.example.to_device_server.edus_in_order';

// How long an answer is believed: a server that upgrades is noticed within the hour.
const ANSWER_TTL_MS = 3600_000;

/**
 * Whether each destination applies EDUs in order, asked of it once an hour; any answer but ours
 * (another server, an error status) means no. No answer at all throws: the destination is
 * down, so the send would fail too, and nothing is packed until it answers.
 */
export class ReceiverOrder {
  private readonly known = new Map<string, { inOrder: boolean; until: number }>();
  private readonly inflight = new Map<string, Promise<boolean>>();

  constructor(
    private readonly client: Pick<FederationClient, 'request'>,
    private readonly now: () => number = Date.now,
  ) {}

  appliesEdusInOrder(destination: string): Promise<boolean> {
    const cached = this.known.get(destination);
    if (cached !== undefined && cached.until > this.now()) return Promise.resolve(cached.inOrder);
    let pending = this.inflight.get(destination);
    if (pending === undefined) {
      pending = this.ask(destination).finally(() => this.inflight.delete(destination));
      this.inflight.set(destination, pending);
    }
    return pending;
  }

  private async ask(destination: string): Promise<boolean> {
    const res = await this.client.request(destination, 'GET', '/_matrix/federation/v1/version', undefined, false);
    const inOrder = res.status === 200 && (res.json as Record<string, unknown> | null)?.[EDUS_IN_ORDER_FIELD] === true;
    this.known.set(destination, { inOrder, until: this.now() + ANSWER_TTL_MS });
    return inOrder;
  }
}
