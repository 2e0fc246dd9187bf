import { Hono } from 'hono';
import * as v from 'valibot';
import type { Services } from '../../services/services.ts';
import { toDeviceEventsJson } from '../../services/sync.ts';
import { requireAuth } from '../auth.ts';
import type { AppEnv } from '../env.ts';
import { jsonObjectOf, readJsonBody } from '../json-body.ts';

const PREFIX = '/unstable/org.matrix.msc3814.v1/dehydrated_device';
const AnyObject = jsonObjectOf(v.unknown(), 'must be an object');
const PutBody = v.object({
  device_id: v.pipe(v.string(), v.minLength(1, 'device_id must not be empty'), v.maxLength(255, 'device_id is at most 255 characters')),
  device_data: AnyObject,
  initial_device_display_name: v.optional(v.nullable(v.pipe(v.string(), v.maxLength(512)))),
  device_keys: v.optional(AnyObject),
  one_time_keys: v.optional(AnyObject),
  fallback_keys: v.optional(AnyObject),
});
const EventsBody = v.object({ next_batch: v.optional(v.string()) });

/** MSC3814 dehydrated devices, `org.matrix.msc3814.v1`. */
export function dehydratedDeviceRoutes(s: Services): Hono<AppEnv> {
  const r = new Hono<AppEnv>();
  const max = s.config.limits.maxRequestBytes;
  r.use(PREFIX, requireAuth(s));
  r.use(`${PREFIX}/*`, requireAuth(s));

  r.put(PREFIX, async (c) => {
    const body = await readJsonBody(c, PutBody, max);
    await s.dehydratedDevices.put({
      userId: c.get('session').userId,
      deviceId: body.device_id,
      deviceData: body.device_data,
      displayName: body.initial_device_display_name ?? null,
      ...(body.device_keys === undefined ? {} : { deviceKeys: body.device_keys }),
      ...(body.one_time_keys === undefined ? {} : { oneTimeKeys: body.one_time_keys }),
      ...(body.fallback_keys === undefined ? {} : { fallbackKeys: body.fallback_keys }),
    });
    return c.json({ device_id: body.device_id });
  });

  r.get(PREFIX, async (c) => {
    const found = await s.dehydratedDevices.get(c.get('session').userId);
    return c.json({ device_id: found.deviceId, device_data: found.deviceData });
  });

  r.delete(PREFIX, async (c) => c.json({ device_id: await s.dehydratedDevices.delete(c.get('session').userId) }));

  // The MSC's drafts used POST with `next_batch` in the body; matrix-js-sdk 43 sends GET with `?from=`.
  const events = async (userId: string, deviceId: string, nextBatch: string | null) => {
    const page = await s.dehydratedDevices.events(userId, deviceId, nextBatch);
    const tail = page.nextBatch === null ? '' : `,"next_batch":${JSON.stringify(page.nextBatch)}`;
    return `{"events":${toDeviceEventsJson(page.events.map((e) => ({ sender: e.sender, type: e.type, contentJson: e.content })))}${tail}}`;
  };
  r.get(`${PREFIX}/:deviceId/events`, async (c) => {
    const from = c.req.query('from') ?? c.req.query('next_batch') ?? null;
    return c.body(await events(c.get('session').userId, c.req.param('deviceId'), from === '' ? null : from), 200, { 'content-type': 'application/json' });
  });
  r.post(`${PREFIX}/:deviceId/events`, async (c) => {
    const body = await readJsonBody(c, EventsBody, max, { optional: true });
    return c.body(await events(c.get('session').userId, c.req.param('deviceId'), body.next_batch ?? null), 200, { 'content-type': 'application/json' });
  });

  return r;
}
