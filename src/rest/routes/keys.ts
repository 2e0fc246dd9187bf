import { Hono } from 'hono';
import * as v from 'valibot';
import { MatrixError } from '../../errors/matrix-error.ts';
import type { PasswordAuth } from '../../services/accounts.ts';
import type { Services } from '../../services/services.ts';
import { requireAuth, deviceOf } from '../auth.ts';
import type { AppEnv } from '../env.ts';
import { jsonObjectOf, readJsonBody } from '../json-body.ts';
import { parseSyncToken } from '../sync-token.ts';

const AnyObject = jsonObjectOf(v.unknown(), 'must be an object');
const UploadBody = v.object({
  device_keys: v.optional(v.nullable(AnyObject)),
  one_time_keys: v.optional(AnyObject),
  fallback_keys: v.optional(AnyObject),
  // The name fallback keys had before they were in the spec (MSC2732), still sent by older clients.
  'org.matrix.msc2732.fallback_keys': v.optional(AnyObject),
});
const Timeout = v.optional(v.pipe(v.number(), v.integer(), v.minValue(0)));
const QueryBody = v.object({
  device_keys: jsonObjectOf(v.array(v.string('device ids are strings')), 'device_keys must map user IDs to lists of device IDs'),
  timeout: Timeout,
  token: v.optional(v.string()),
});
// Loose: a key algorithm's claim parameters ride in a field named like it (MSC4244's `mls`).
const ClaimBody = v.looseObject({
  one_time_keys: jsonObjectOf(jsonObjectOf(v.string('an algorithm is a string'), 'one_time_keys.<user_id> must map device IDs to algorithms'), 'one_time_keys must be an object'),
  timeout: Timeout,
});
const AuthDict = v.optional(jsonObjectOf(v.unknown(), 'auth must be an object'));
const DeviceSigningBody = v.object({
  master_key: v.optional(v.nullable(AnyObject)),
  self_signing_key: v.optional(v.nullable(AnyObject)),
  user_signing_key: v.optional(v.nullable(AnyObject)),
  auth: AuthDict,
});

/** The client-server "End-to-end encryption" key endpoints (spec v1.13). */
export function keysRoutes(s: Services): Hono<AppEnv> {
  const r = new Hono<AppEnv>();
  const max = s.config.limits.maxRequestBytes;
  r.use('/v3/keys/*', requireAuth(s));

  r.post('/v3/keys/upload', async (c) => {
    const session = c.get('session');
    const body = await readJsonBody(c, UploadBody, max);
    const fallbackKeys = body.fallback_keys ?? body['org.matrix.msc2732.fallback_keys'];
    const counts = await s.keys.upload({
      userId: session.userId,
      deviceId: deviceOf(session),
      deviceKeys: body.device_keys ?? undefined,
      ...(body.one_time_keys === undefined ? {} : { oneTimeKeys: body.one_time_keys }),
      ...(fallbackKeys === undefined ? {} : { fallbackKeys }),
    });
    return c.json({ one_time_key_counts: counts });
  });

  r.post('/v3/keys/query', async (c) => {
    const body = await readJsonBody(c, QueryBody, max);
    return c.json(await s.keys.query(c.get('session').userId, body.device_keys, body.timeout));
  });

  r.post('/v3/keys/claim', async (c) => {
    const session = c.get('session');
    const waitMs = s.keysClaimLimiter.take(session.userId);
    if (waitMs > 0) {
      throw new MatrixError('M_LIMIT_EXCEEDED', 'Too many key claims', { extra: { retry_after_ms: waitMs }, headers: { 'Retry-After': String(Math.ceil(waitMs / 1000)) } });
    }
    const body = await readJsonBody(c, ClaimBody, max);
    return c.json(await s.keys.claim(body.one_time_keys, body.timeout, s.keys.algorithms.claimParams(body)));
  });

  r.get('/v3/keys/changes', async (c) => {
    const from = c.req.query('from');
    const to = c.req.query('to');
    if (from === undefined || from === '') throw new MatrixError('M_MISSING_PARAM', 'from is required');
    const fromLists = parseSyncToken(from, 'from').deviceLists;
    const toLists = to === undefined || to === '' ? null : parseSyncToken(to, 'to').deviceLists;
    const delta = await s.deviceLists.since(c.get('session').userId, fromLists ?? 0, toLists);
    return c.json({ changed: delta.changed, left: delta.left });
  });

  r.post('/v3/keys/signatures/upload', async (c) => {
    const body = await readJsonBody(c, AnyObject, max);
    return c.json(await s.keys.uploadSignatures(c.get('session').userId, body));
  });

  r.post('/v3/keys/device_signing/upload', async (c) => {
    const userId = c.get('session').userId;
    const body = await readJsonBody(c, DeviceSigningBody, max);
    const keys = { master: body.master_key ?? undefined, self_signing: body.self_signing_key ?? undefined, user_signing: body.user_signing_key ?? undefined };
    if (await s.keys.crossSigningUploadNeedsAuth(userId, keys)) await s.accounts.requirePasswordUia(userId, body.auth as PasswordAuth | undefined);
    await s.keys.uploadCrossSigning(userId, keys);
    return c.json({});
  });

  return r;
}
