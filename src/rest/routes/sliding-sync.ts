import { Hono } from 'hono';
import * as v from 'valibot';
import type { Services } from '../../services/services.ts';
import { toDeviceEventsJson } from '../../services/sync.ts';
import { authenticate, deviceOf } from '../auth.ts';
import { clientConnectionOf } from '../client-connection.ts';
import type { AppEnv } from '../env.ts';
import { readJsonBody } from '../json-body.ts';
import { intParam } from '../query.ts';
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
    }),
  ),
});

// Stands in for the events array in the response; contents are spliced in as stored JSON.
const EVENTS = '\u0000events\u0000';

/**
 * Simplified sliding sync (MSC4186), to-device extension only: the same queue and the same
 * acknowledgement rule as /sync, with the position carried in `extensions.to_device.since`.
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
    const response: Record<string, unknown> = { lists: {}, rooms: {}, extensions: {} };
    if (ext?.enabled !== true) {
      response.pos = pos ?? '0';
      return c.json(response);
    }
    const since = ext.since === undefined ? null : parseSyncToken(ext.since, 'extensions.to_device.since');
    // Returned, not awaited: this handler's frame ends while the poll is parked (see ToDeviceSyncService.sync).
    return s.toDeviceSync.sync(
      {
        userId: session.userId,
        deviceId: deviceOf(session),
        since,
        limit: Math.min(ext.limit ?? s.config.limits.syncToDeviceLimit, s.config.limits.syncToDeviceLimit),
        timeoutMs: pos === undefined ? 0 : timeout,
        connection: clientConnectionOf(c),
      },
      (batch) => {
        const nextBatch = encodeSyncToken(batch.nextPosition);
        response.pos = nextBatch;
        response.extensions = { to_device: { next_batch: nextBatch, events: EVENTS } };
        return c.body(JSON.stringify(response).replace(JSON.stringify(EVENTS), toDeviceEventsJson(batch.events)), 200, {
          'content-type': 'application/json',
        });
      },
    );
  });

  return r;
}
