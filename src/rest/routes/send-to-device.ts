import { Hono } from 'hono';
import * as v from 'valibot';
import { MatrixError } from '../../errors/matrix-error.ts';
import type { Services } from '../../services/services.ts';
import { authenticate } from '../auth.ts';
import type { AppEnv } from '../env.ts';
import { jsonObjectOf, readJsonBody } from '../json-body.ts';

const Content = jsonObjectOf(v.unknown(), 'each message content must be a JSON object');
const SendToDeviceBody = v.object({
  messages: jsonObjectOf(jsonObjectOf(Content, 'messages.<user_id> must map device IDs to contents'), 'messages must be an object'),
});

export function sendToDeviceRoutes(s: Services): Hono<AppEnv> {
  const r = new Hono<AppEnv>();

  r.put('/v3/sendToDevice/:eventType/:txnId', async (c) => {
    // Authenticated here, not by middleware: a route with none runs without Hono's compose.
    const session = await authenticate(c, s);
    const { eventType, txnId } = c.req.param();
    if (Buffer.byteLength(eventType, 'utf8') > 255) throw new MatrixError('M_INVALID_PARAM', 'Event type is longer than 255 bytes');
    const exempt = session.appserviceId !== undefined && s.appservices.all.find((a) => a.id === session.appserviceId)?.rateLimited === false;
    if (!exempt) {
      const waitMs = s.sendToDeviceLimiter.take(`${session.userId}\u0000${session.deviceId ?? ''}`);
      if (waitMs > 0) {
        throw new MatrixError('M_LIMIT_EXCEEDED', 'Too many requests', {
          extra: { retry_after_ms: waitMs },
          headers: { 'Retry-After': String(Math.ceil(waitMs / 1000)) },
        });
      }
    }
    const body = await readJsonBody(c, SendToDeviceBody, s.config.limits.maxRequestBytes);
    const response = await s.toDevice.send({
      sender: session.userId,
      senderDevice: session.deviceId,
      type: eventType,
      origin: 'client',
      messages: body.messages as Record<string, Record<string, Record<string, unknown>>>,
      txn: { userId: session.userId, deviceId: session.deviceId ?? `as:${session.appserviceId ?? ''}`, endpoint: `sendToDevice/${eventType}`, txnId },
    });
    return c.json(response);
  });

  return r;
}
