import { MatrixError } from '../errors/matrix-error.ts';
import type { Db } from '../storage/drivers/database.ts';
import { DehydratedDevicesStore } from '../storage/dehydrated-devices-store.ts';
import { DeviceInboxStore, type DeliveredMessage } from '../storage/device-inbox-store.ts';
import type { AccountsService } from './accounts.ts';
import { checkDeviceKeys, type JsonObject } from './key-checks.ts';
import { requestRowIds } from './stale-requests.ts';
import type { KeysService } from './keys.ts';

export interface DehydrateInput {
  userId: string;
  deviceId: string;
  deviceData: JsonObject;
  displayName: string | null;
  deviceKeys?: unknown;
  oneTimeKeys?: Record<string, unknown>;
  fallbackKeys?: Record<string, unknown>;
}

/** Events of a dehydrated device per page, as a /sync answers at most this many. */
const EVENTS_PER_PAGE = 100;

/**
 * MSC3814 dehydrated devices: one per user, a device that has keys and receives to-device
 * messages like any other, but no access token; a new login of the user fetches its events to
 * rehydrate it. A new dehydrated device replaces the old one (its keys and queue go with it).
 */
export class DehydratedDevices {
  private readonly store: DehydratedDevicesStore;
  private readonly inbox: DeviceInboxStore;

  constructor(
    db: Db,
    private readonly accounts: AccountsService,
    private readonly keys: KeysService,
  ) {
    this.store = new DehydratedDevicesStore(db);
    this.inbox = new DeviceInboxStore(db);
  }

  async put(input: DehydrateInput): Promise<void> {
    // Checked before anything changes: a refused upload must leave the old device in place.
    if (input.deviceKeys !== undefined) checkDeviceKeys(input.deviceKeys, input.userId, input.deviceId);
    const old = await this.store.get(input.userId);
    if (old?.deviceId !== input.deviceId && (await this.accounts.deviceExists(input.userId, input.deviceId))) throw deviceTaken(input.deviceId);
    if (old !== null) await this.remove(input.userId, old.deviceId);
    if (!(await this.store.create(input.userId, input.deviceId, input.displayName, JSON.stringify(input.deviceData)))) {
      throw deviceTaken(input.deviceId);
    }
    await this.keys.upload({
      userId: input.userId,
      deviceId: input.deviceId,
      deviceKeys: input.deviceKeys,
      ...(input.oneTimeKeys === undefined ? {} : { oneTimeKeys: input.oneTimeKeys }),
      ...(input.fallbackKeys === undefined ? {} : { fallbackKeys: input.fallbackKeys }),
    });
  }

  async get(userId: string): Promise<{ deviceId: string; deviceData: unknown }> {
    const found = await this.store.get(userId);
    if (found === null) throw new MatrixError('M_NOT_FOUND', 'No dehydrated device');
    return { deviceId: found.deviceId, deviceData: JSON.parse(found.deviceData) as unknown };
  }

  async delete(userId: string): Promise<string> {
    const found = await this.store.get(userId);
    if (found === null) throw new MatrixError('M_NOT_FOUND', 'No dehydrated device');
    await this.remove(userId, found.deviceId);
    return found.deviceId;
  }

  /**
   * A page of the device's to-device events. `nextBatch` (the previous page's token) acknowledges
   * that page, as a /sync `since` does; no `next_batch` in the answer means nothing is left.
   */
  async events(userId: string, deviceId: string, nextBatch: string | null): Promise<{ events: DeliveredMessage[]; nextBatch: string | null }> {
    const found = await this.store.get(userId);
    if (found === null || found.deviceId !== deviceId) throw new MatrixError('M_FORBIDDEN', 'That is not your dehydrated device');
    let since = 0;
    if (nextBatch !== null) {
      if (!/^\d{1,15}$/.test(nextBatch)) throw new MatrixError('M_INVALID_PARAM', 'Malformed next_batch');
      since = Number(nextBatch);
    }
    const { rows } = since === 0 ? { rows: await this.inbox.fetch(userId, deviceId, 0, EVENTS_PER_PAGE) } : await this.inbox.ackAndFetch(userId, deviceId, since, EVENTS_PER_PAGE);
    const last = rows[rows.length - 1];
    // A reader like /sync: key and secret requests are recorded as carried (MSC3944, see
    // stale-requests.ts), and any a cancellation removed meanwhile are left out.
    const requests = requestRowIds(rows);
    const kept = requests === null ? null : await this.inbox.recordRequestsRead(userId, deviceId, [...requests]);
    const events = requests === null || kept === null ? rows : rows.filter((r) => !requests.has(r.streamId) || kept.has(r.streamId));
    return { events, nextBatch: last === undefined ? null : String(last.streamId) };
  }

  private async remove(userId: string, deviceId: string): Promise<void> {
    await this.accounts.deleteDevicesWithoutAuth(userId, [deviceId]);
    await this.store.forget(userId, deviceId);
  }
}

function deviceTaken(deviceId: string): MatrixError {
  return new MatrixError('M_INVALID_PARAM', `Device ${deviceId} already exists; a dehydrated device needs a new device ID`);
}
