import { and, eq, sql } from 'drizzle-orm';
import type { Db } from './drivers/database.ts';
import { dehydratedDevices, devices } from './schema.ts';

export interface DehydratedDevice {
  deviceId: string;
  /** The client's `device_data`, as JSON text. */
  deviceData: string;
}

/** Which device of a user is its dehydrated one (MSC3814), and that device's data. */
export class DehydratedDevicesStore {
  constructor(private readonly db: Db) {}

  /** The user's dehydrated device, unless the device was deleted meanwhile (e.g. with DELETE /devices). */
  async get(userId: string): Promise<DehydratedDevice | null> {
    const rows = await this.db
      .select({ deviceId: dehydratedDevices.deviceId, deviceData: dehydratedDevices.deviceData })
      .from(dehydratedDevices)
      .innerJoin(devices, and(eq(devices.userId, dehydratedDevices.userId), eq(devices.deviceId, dehydratedDevices.deviceId)))
      .where(eq(dehydratedDevices.userId, userId));
    return rows[0] ?? null;
  }

  /**
   * Creates the device (no access token: nobody can log in as it) and makes it the user's
   * dehydrated device. False when a device with that ID already exists.
   */
  async create(userId: string, deviceId: string, displayName: string | null, deviceData: string): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const created = await tx
        .insert(devices)
        .values({ userId, deviceId, displayName, tokenHash: null, createdTs: Date.now() })
        .onConflictDoNothing()
        .returning({ deviceId: devices.deviceId });
      if (created.length === 0) return false;
      await tx.execute(sql`
        insert into dehydrated_devices (user_id, device_id, device_data, created_ts) values (${userId}, ${deviceId}, ${deviceData}, ${Date.now()})
        on conflict (user_id) do update set device_id = excluded.device_id, device_data = excluded.device_data, created_ts = excluded.created_ts`);
      return true;
    });
  }

  async forget(userId: string, deviceId: string): Promise<void> {
    await this.db.execute(sql`delete from dehydrated_devices where user_id = ${userId} and device_id = ${deviceId}`);
  }
}
