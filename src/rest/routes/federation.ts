import { Hono } from 'hono';
import * as v from 'valibot';
import { MatrixError } from '../../errors/matrix-error.ts';
import { EDUS_IN_ORDER_FIELD } from '../../federation/receiver-order.ts';
import type { RemoteKeys } from '../../federation/remote-keys.ts';
import type { FederationInbound } from '../../services/federation-inbound.ts';
import type { Services } from '../../services/services.ts';
import type { AppEnv } from '../env.ts';
import { authenticateFederation } from '../federation-auth.ts';
import { readJsonBody } from '../json-body.ts';

const TransactionBody = v.object({
  origin: v.optional(v.string()),
  origin_server_ts: v.optional(v.number()),
  pdus: v.optional(v.array(v.unknown()), []),
  edus: v.optional(v.array(v.unknown()), []),
});

export interface FederationRouteDeps {
  services: Services;
  keys: RemoteKeys;
  inbound: FederationInbound;
}

/** `/_matrix/federation/v1/…`: transactions in, and the version probe. */
export function federationRoutes({ services: s, keys, inbound }: FederationRouteDeps): Hono<AppEnv> {
  const r = new Hono<AppEnv>();

  // FederationInbound stores a transaction's EDUs in one statement, in their order, so senders that read
  // this may pack several messages for one device into one transaction.
  r.get('/v1/version', (c) => c.json({ server: { name: 'matrix-to-device-server', version: '0.1.0' }, [EDUS_IN_ORDER_FIELD]: true }));

  r.put('/v1/send/:txnId', async (c) => {
    const body = await readJsonBody(c, TransactionBody, s.config.limits.maxRequestBytes);
    // Verify over the body as received (not the parsed-with-defaults one).
    const raw = JSON.parse(await c.req.text()) as unknown;
    const origin = await authenticateFederation(c, s.config.serverName, keys, raw);
    if (body.origin !== undefined && body.origin !== origin) {
      throw new MatrixError('M_FORBIDDEN', 'Transaction origin does not match the signing server');
    }
    return c.json(await inbound.applyTransaction(origin, body.pdus, body.edus));
  });

  return r;
}
