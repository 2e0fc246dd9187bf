import { Hono } from 'hono';
import { MatrixError } from '../../errors/matrix-error.ts';
import type { DeviceListDelta } from '../../services/device-lists.ts';
import { countsJson } from '../../services/keys.ts';
import type { Services } from '../../services/services.ts';
import type { KeyCounts } from '../../storage/e2e-keys-store.ts';
import { toDeviceEventsJson, type ToDeviceBatch } from '../../services/sync.ts';
import { authenticate, deviceOf } from '../auth.ts';
import { clientConnectionOf } from '../client-connection.ts';
import type { AppEnv } from '../env.ts';
import { boolParam, intParam } from '../../shared/query-params.ts';
import { encodeSyncToken, parseSyncToken } from '../sync-token.ts';

const PRESENCE = new Set(['online', 'offline', 'unavailable']);
// Stands in for the events array in the response shell; contents are spliced in as stored JSON.
const EVENTS = '\u0000events\u0000';

export function syncRoutes(s: Services): Hono<AppEnv> {
  const r = new Hono<AppEnv>();

  r.get('/v3/sync', async (c) => {
    // Authenticated here, not by middleware: see authenticate.
    const session = await authenticate(c, s);
    const sinceRaw = c.req.query('since');
    const since = sinceRaw === undefined || sinceRaw === '' ? null : parseSyncToken(sinceRaw);
    const timeout = Math.min(intParam(c.req.query('timeout'), 'timeout', 0), s.config.limits.maxSyncTimeoutMs);
    const fullState = boolParam(c.req.query('full_state'), 'full_state');
    const presence = c.req.query('set_presence');
    if (presence !== undefined && !PRESENCE.has(presence)) {
      throw new MatrixError('M_INVALID_PARAM', 'set_presence must be online, offline or unavailable');
    }
    const filter = c.req.query('filter');
    if (filter !== undefined && filter !== '') await s.filters.checkSyncParam(session.userId, filter);

    const userId = session.userId;
    const deviceId = deviceOf(session);
    // A token from before device lists were served reports no changes, as an initial sync.
    const listsAfter = since === null ? null : since.deviceLists;
    // As in Synapse, an initial or full-state sync answers at once. Returned, not awaited: this
    // handler's frame ends while the poll is parked (see ToDeviceSyncService.sync).
    return s.toDeviceSync.sync(
      {
        userId,
        deviceId,
        since: since?.toDevice ?? null,
        limit: s.config.limits.syncToDeviceLimit,
        timeoutMs: since === null || fullState ? 0 : timeout,
        connection: clientConnectionOf(c),
        ...(listsAfter === null ? {} : { otherNews: () => s.deviceLists.since(userId, listsAfter).then((d) => d.changed.length > 0) }),
      },
      async (batch) => {
        const [lists, keys] = await Promise.all([s.deviceLists.since(userId, listsAfter), s.keys.countsFor(userId, deviceId)]);
        return c.body(syncResponseJson(batch, lists, keys), 200, { 'content-type': 'application/json' });
      },
    );
  });

  return r;
}

/** The /sync response: no rooms, presence or account data here, the to-device batch spliced in as stored JSON. */
function syncResponseJson(batch: ToDeviceBatch, lists: DeviceListDelta, keys: KeyCounts): string {
  const shell = JSON.stringify({
    next_batch: encodeSyncToken(batch.nextPosition, lists.position),
    rooms: { join: {}, invite: {}, leave: {}, knock: {} },
    account_data: { events: [] },
    presence: { events: [] },
    to_device: { events: EVENTS },
    device_lists: { changed: lists.changed, left: lists.left },
    device_one_time_keys_count: countsJson(keys),
    device_unused_fallback_key_types: keys.unusedFallback,
  });
  return shell.replace(JSON.stringify(EVENTS), toDeviceEventsJson(batch.events));
}
