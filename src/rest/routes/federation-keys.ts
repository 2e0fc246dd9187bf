import { Hono } from 'hono';
import * as v from 'valibot';
import type { RemoteKeys } from '../../federation/remote-keys.ts';
import type { Services } from '../../services/services.ts';
import type { AppEnv } from '../env.ts';
import { authenticateFederation } from '../federation-auth.ts';
import { jsonObjectOf, readJsonBody } from '../json-body.ts';

const QueryBody = v.object({
  device_keys: jsonObjectOf(v.array(v.string('device ids are strings')), 'device_keys must map user IDs to lists of device IDs'),
});
// Loose: a key algorithm's claim parameters ride in a field named like it (MSC4244's `mls`).
const ClaimBody = v.looseObject({
  one_time_keys: jsonObjectOf(jsonObjectOf(v.string('an algorithm is a string'), 'one_time_keys.<user_id> must map device IDs to algorithms'), 'one_time_keys must be an object'),
});

/**
 * The server-server end-to-end encryption endpoints (spec v1.13): other servers query and claim
 * our users' keys and fetch their device lists; each query makes the asking server follow those
 * users' device lists (it gets `m.device_list_update` EDUs from then on).
 */
export function federationKeysRoutes(s: Services, keys: RemoteKeys): Hono<AppEnv> {
  const r = new Hono<AppEnv>();
  const max = s.config.limits.maxRequestBytes;

  r.post('/v1/user/keys/query', async (c) => {
    const body = await readJsonBody(c, QueryBody, max);
    const origin = await authenticateFederation(c, s.config.serverName, keys, JSON.parse(await c.req.text()) as unknown);
    return c.json(await s.keys.queryForServer(origin, body.device_keys));
  });

  r.post('/v1/user/keys/claim', async (c) => {
    const body = await readJsonBody(c, ClaimBody, max);
    await authenticateFederation(c, s.config.serverName, keys, JSON.parse(await c.req.text()) as unknown);
    return c.json({ one_time_keys: await s.keys.claimLocal(body.one_time_keys, s.keys.algorithms.claimParams(body)) });
  });

  r.get('/v1/user/devices/:userId', async (c) => {
    const origin = await authenticateFederation(c, s.config.serverName, keys, undefined);
    return c.json(await s.keys.devicesForServer(origin, c.req.param('userId')));
  });

  return r;
}
