import { Hono } from 'hono';
import * as v from 'valibot';
import type { DeviceRow } from '../../storage/accounts-store.ts';
import type { Services } from '../../services/services.ts';
import { requireAuth } from '../auth.ts';
import type { AppEnv } from '../env.ts';
import { readJsonBody } from '../json-body.ts';

const AuthDict = v.optional(
  v.object({
    type: v.optional(v.string()),
    session: v.optional(v.string()),
    identifier: v.optional(v.object({ type: v.optional(v.string()), user: v.optional(v.string()) })),
    user: v.optional(v.string()),
    password: v.optional(v.string()),
  }),
);

const DeleteDeviceBody = v.object({ auth: AuthDict });
const DeleteDevicesBody = v.object({ devices: v.array(v.string()), auth: AuthDict });
const UpdateDeviceBody = v.object({ display_name: v.optional(v.nullable(v.pipe(v.string(), v.maxLength(512)))) });

function deviceJson(d: DeviceRow) {
  return {
    device_id: d.deviceId,
    display_name: d.displayName ?? undefined,
    last_seen_ip: d.lastSeenIp ?? undefined,
    last_seen_ts: d.lastSeenTs ?? undefined,
  };
}

export function devicesRoutes(s: Services): Hono<AppEnv> {
  const r = new Hono<AppEnv>();
  const max = s.config.limits.maxRequestBytes;
  r.use('/v3/devices', requireAuth(s));
  r.use('/v3/devices/*', requireAuth(s));
  r.use('/v3/delete_devices', requireAuth(s));

  r.get('/v3/devices', async (c) => {
    const list = await s.accounts.listDevices(c.get('session').userId);
    return c.json({ devices: list.map(deviceJson) });
  });

  r.get('/v3/devices/:deviceId', async (c) => {
    return c.json(deviceJson(await s.accounts.getDevice(c.get('session').userId, c.req.param('deviceId'))));
  });

  r.put('/v3/devices/:deviceId', async (c) => {
    const body = await readJsonBody(c, UpdateDeviceBody, max);
    const userId = c.get('session').userId;
    const deviceId = c.req.param('deviceId');
    // Spec: "If not given, the display name is unchanged."
    if (body.display_name === undefined) await s.accounts.getDevice(userId, deviceId);
    else await s.accounts.setDeviceDisplayName(userId, deviceId, body.display_name);
    return c.json({});
  });

  r.delete('/v3/devices/:deviceId', async (c) => {
    const body = await readJsonBody(c, DeleteDeviceBody, max, { optional: true });
    const userId = c.get('session').userId;
    const deviceId = c.req.param('deviceId');
    await s.accounts.getDevice(userId, deviceId);
    await s.accounts.deleteDevices(userId, [deviceId], body.auth);
    return c.json({});
  });

  r.post('/v3/delete_devices', async (c) => {
    const body = await readJsonBody(c, DeleteDevicesBody, max);
    await s.accounts.deleteDevices(c.get('session').userId, body.devices, body.auth);
    return c.json({});
  });

  return r;
}
