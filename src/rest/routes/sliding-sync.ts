import { Hono } from 'hono';
import * as v from 'valibot';
import type { DeviceListDelta } from '../../services/device-lists.ts';
import { countsJson } from '../../services/keys.ts';
import type { Services } from '../../services/services.ts';
import { toDeviceEventsJson } from '../../services/sync.ts';
import { authenticate, deviceOf } from '../auth.ts';
import { clientConnectionOf } from '../client-connection.ts';
import type { AppEnv } from '../env.ts';
import { readJsonBody } from '../json-body.ts';
import { intParam } from '../../shared/query-params.ts';
import { encodeSyncToken, parseSyncToken } from '../sync-token.ts';

const SlidingSyncBody = v.object({
  extensions: v.optional(
    v.object({
      to_device: v.optional(
        v.object({
          enabled: v.optional(v.boolean()),
          limit: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
          since: v.optional(v.string()),
        }),
      ),
      e2ee: v.optional(v.object({ enabled: v.optional(v.boolean()) })),
    }),
  ),
});

// Stands in for the events array in the response; contents are spliced in as stored JSON.
const EVENTS = '\u0000events\u0000';

/**
 * Simplified sliding sync (MSC4186), to-device and e2ee extensions only: the same queue and the
 * same acknowledgement rule as /sync, with the position carried in `extensions.to_device.since`;
 * the e2ee extension's device-list position rides in `pos`.
 */
export function slidingSyncRoutes(s: Services): Hono<AppEnv> {
  const r = new Hono<AppEnv>();

  r.post('/unstable/org.matrix.simplified_msc3575/sync', async (c) => {
    // Authenticated here, not by middleware: see authenticate.
    const session = await authenticate(c, s);
    const body = await readJsonBody(c, SlidingSyncBody, s.config.limits.maxRequestBytes);
    const pos = c.req.query('pos');
    const timeout = Math.min(intParam(c.req.query('timeout'), 'timeout', 0), s.config.limits.maxSyncTimeoutMs);
    const ext = body.extensions?.to_device;
    const e2ee = body.extensions?.e2ee?.enabled === true;
    const userId = session.userId;
    // `pos` carries the device-list position for the e2ee extension; a `pos` of another form
    // (a client's first request, an older server's) reports no changes, as an initial sync.
    const listsAfter = pos === undefined || !/^v1\./.test(pos) ? null : parseSyncToken(pos, 'pos').deviceLists;
    const answer = async (toDevicePosition: number, toDevice: string | null): Promise<Response> => {
      const response: Record<string, unknown> = { lists: {}, rooms: {}, extensions: {} };
      const extensions: Record<string, unknown> = {};
      let lists: DeviceListDelta | null = null;
      if (e2ee) {
        const deviceId = deviceOf(session);
        const [delta, keys] = await Promise.all([s.deviceLists.since(userId, listsAfter), s.keys.countsFor(userId, deviceId)]);
        lists = delta;
        extensions.e2ee = {
          device_lists: { changed: delta.changed, left: delta.left },
          device_one_time_keys_count: countsJson(keys),
          device_unused_fallback_key_types: keys.unusedFallback,
        };
      }
      if (toDevice !== null) extensions.to_device = { next_batch: encodeSyncToken(toDevicePosition), events: EVENTS };
      response.extensions = extensions;
      response.pos = encodeSyncToken(toDevicePosition, lists?.position ?? listsAfter ?? 0);
      const json = JSON.stringify(response);
      return c.body(toDevice === null ? json : json.replace(JSON.stringify(EVENTS), toDevice), 200, { 'content-type': 'application/json' });
    };
    if (ext?.enabled !== true) return answer(pos !== undefined && /^v1\./.test(pos) ? parseSyncToken(pos, 'pos').toDevice : 0, null);
    const since = ext.since === undefined ? null : parseSyncToken(ext.since, 'extensions.to_device.since').toDevice;
    // Returned, not awaited: this handler's frame ends while the poll is parked (see ToDeviceSyncService.sync).
    return s.toDeviceSync.sync(
      {
        userId,
        deviceId: deviceOf(session),
        since,
        limit: Math.min(ext.limit ?? s.config.limits.syncToDeviceLimit, s.config.limits.syncToDeviceLimit),
        timeoutMs: pos === undefined ? 0 : timeout,
        connection: clientConnectionOf(c),
        ...(e2ee && listsAfter !== null ? { otherNews: () => s.deviceLists.since(userId, listsAfter).then((d) => d.changed.length > 0) } : {}),
      },
      (batch) => answer(batch.nextPosition, toDeviceEventsJson(batch.events)),
    );
  });

  return r;
}
