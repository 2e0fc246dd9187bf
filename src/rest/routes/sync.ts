import { Hono } from 'hono';
import { MatrixError } from '../../errors/matrix-error.ts';
import type { Services } from '../../services/services.ts';
import { toDeviceEventsJson, type ToDeviceBatch } from '../../services/sync.ts';
import { authenticate, deviceOf } from '../auth.ts';
import { clientConnectionOf } from '../client-connection.ts';
import type { AppEnv } from '../env.ts';
import { boolParam, intParam } from '../query.ts';
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

    // As in Synapse, an initial or full-state sync answers at once. Returned, not awaited: this
    // handler's frame ends while the poll is parked (see ToDeviceSyncService.sync).
    return s.toDeviceSync.sync(
      {
        userId: session.userId,
        deviceId: deviceOf(session),
        since,
        limit: s.config.limits.syncToDeviceLimit,
        timeoutMs: since === null || fullState ? 0 : timeout,
        connection: clientConnectionOf(c),
      },
      (batch) => c.body(syncResponseJson(batch), 200, { 'content-type': 'application/json' }),
    );
  });

  return r;
}

/** The /sync response: no rooms, presence or account data here, the to-device batch spliced in as stored JSON. */
function syncResponseJson(batch: ToDeviceBatch): string {
  const shell = JSON.stringify({
    next_batch: encodeSyncToken(batch.nextPosition),
    rooms: { join: {}, invite: {}, leave: {}, knock: {} },
    account_data: { events: [] },
    presence: { events: [] },
    to_device: { events: EVENTS },
    device_lists: { changed: [], left: [] },
    device_one_time_keys_count: {},
    device_unused_fallback_key_types: [],
  });
  return shell.replace(JSON.stringify(EVENTS), toDeviceEventsJson(batch.events));
}
