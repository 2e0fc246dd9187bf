import { and, asc, eq, inArray } from 'drizzle-orm';
import type { Db } from './drivers/database.ts';
import { DeviceListsStore } from './device-lists-store.ts';
import { deviceInbox, devices, e2eDeviceKeys, e2eFallbackKeys, e2eOneTimeKeys, e2eSignatures, users } from './schema.ts';

export interface DeviceRow {
  userId: string;
  deviceId: string;
  displayName: string | null;
  lastSeenTs: number | null;
  lastSeenIp: string | null;
}

const deviceColumns = {
  userId: devices.userId,
  deviceId: devices.deviceId,
  displayName: devices.displayName,
  lastSeenTs: devices.lastSeenTs,
  lastSeenIp: devices.lastSeenIp,
};

/** Users, their devices and access tokens (hashed). */
export class AccountsStore {
  constructor(private readonly db: Db) {}

  /** Returns false when the user ID is taken. */
  async createUser(userId: string, localpart: string, passwordHash: string | null): Promise<boolean> {
    const inserted = await this.db
      .insert(users)
      .values({ userId, localpart, passwordHash, createdTs: Date.now() })
      .onConflictDoNothing()
      .returning({ userId: users.userId });
    return inserted.length === 1;
  }

  async getUser(userId: string): Promise<{ userId: string; passwordHash: string | null; deactivated: boolean } | null> {
    const rows = await this.db
      .select({ userId: users.userId, passwordHash: users.passwordHash, deactivated: users.deactivated })
      .from(users)
      .where(eq(users.userId, userId));
    return rows[0] ?? null;
  }

  /**
   * Creates the device or, if it exists, gives it a new token (the old one stops working) and
   * keeps its queue: logging in again with a device_id resumes that device.
   */
  /** Returns the token hash the device had before, if it existed (that token is now dead). */
  async upsertDevice(userId: string, deviceId: string, displayName: string | null, tokenHash: string): Promise<string | null> {
    const before = await this.db
      .select({ tokenHash: devices.tokenHash })
      .from(devices)
      .where(and(eq(devices.userId, userId), eq(devices.deviceId, deviceId)));
    await this.db
      .insert(devices)
      .values({ userId, deviceId, displayName, tokenHash, createdTs: Date.now() })
      .onConflictDoUpdate({
        target: [devices.userId, devices.deviceId],
        set: displayName === null ? { tokenHash } : { tokenHash, displayName },
      });
    return before[0]?.tokenHash ?? null;
  }

  async findDeviceByTokenHash(tokenHash: string): Promise<{ userId: string; deviceId: string } | null> {
    const rows = await this.db
      .select({ userId: devices.userId, deviceId: devices.deviceId })
      .from(devices)
      .innerJoin(users, eq(users.userId, devices.userId))
      .where(and(eq(devices.tokenHash, tokenHash), eq(users.deactivated, false)));
    return rows[0] ?? null;
  }

  async listDevices(userId: string): Promise<DeviceRow[]> {
    return this.db.select(deviceColumns).from(devices).where(eq(devices.userId, userId)).orderBy(asc(devices.deviceId));
  }

  async getDevice(userId: string, deviceId: string): Promise<DeviceRow | null> {
    const rows = await this.db
      .select(deviceColumns)
      .from(devices)
      .where(and(eq(devices.userId, userId), eq(devices.deviceId, deviceId)));
    return rows[0] ?? null;
  }

  /** Renames a device; the name is in /keys/query answers, so the device list changes. */
  async setDeviceDisplayName(userId: string, deviceId: string, displayName: string | null): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const rows = await tx
        .update(devices)
        .set({ displayName })
        .where(and(eq(devices.userId, userId), eq(devices.deviceId, deviceId)))
        .returning({ deviceId: devices.deviceId });
      if (rows.length !== 1) return false;
      await DeviceListsStore.appendChanges(tx, [{ userId, deviceId }]);
      return true;
    });
  }

  /**
   * Deletes devices (all of the user's when `deviceIds` is null) with their tokens, their
   * pending to-device messages and their keys, in one transaction, recording the change in
   * the device-list stream. Rows are locked in the same order senders
   * lock them, so a concurrent send cannot deadlock with a logout.
   */
  async deleteDevices(userId: string, deviceIds: readonly string[] | null): Promise<{ deviceId: string; tokenHash: string | null }[]> {
    if (deviceIds !== null && deviceIds.length === 0) return [];
    return this.db.transaction(async (tx) => {
      const where =
        deviceIds === null
          ? eq(devices.userId, userId)
          : and(eq(devices.userId, userId), inArray(devices.deviceId, [...deviceIds]));
      const locked = await tx
        .select({ deviceId: devices.deviceId, tokenHash: devices.tokenHash })
        .from(devices)
        .where(where)
        .orderBy(asc(devices.userId), asc(devices.deviceId))
        .for('update');
      const ids = locked.map((r) => r.deviceId);
      if (ids.length === 0) return [];
      await tx.delete(devices).where(and(eq(devices.userId, userId), inArray(devices.deviceId, ids)));
      await tx.delete(deviceInbox).where(and(eq(deviceInbox.userId, userId), inArray(deviceInbox.deviceId, ids)));
      await tx.delete(e2eDeviceKeys).where(and(eq(e2eDeviceKeys.userId, userId), inArray(e2eDeviceKeys.deviceId, ids)));
      await tx.delete(e2eOneTimeKeys).where(and(eq(e2eOneTimeKeys.userId, userId), inArray(e2eOneTimeKeys.deviceId, ids)));
      await tx.delete(e2eFallbackKeys).where(and(eq(e2eFallbackKeys.userId, userId), inArray(e2eFallbackKeys.deviceId, ids)));
      await tx.delete(e2eSignatures).where(and(eq(e2eSignatures.targetUserId, userId), inArray(e2eSignatures.targetKeyId, ids)));
      await DeviceListsStore.appendChanges(tx, ids.map((deviceId) => ({ userId, deviceId })));
      return locked;
    });
  }
}
