import type { Db } from '../storage/drivers/database.ts';
import { DeviceListsStore } from '../storage/device-lists-store.ts';
import type { Notifier } from '../runtime/notifier.ts';

export interface DeviceListDelta {
  /** Users to re-query: the user itself and those it tracks, whose devices or keys changed. */
  changed: string[];
  /** Always empty: tracking never ends here (see docs/e2ee.md, "Device lists without rooms"). */
  left: string[];
  /** The device-list position this answer reaches, for the next sync token. */
  position: number;
}

export interface DeviceListsDeps {
  db: Db;
  notifier: Notifier;
  /** Tells other processes the new position and which devices to wake (PostgreSQL NOTIFY). */
  publish?: (position: number, devices: { userId: string; deviceId: string }[]) => void;
  /** Told which servers following the changed users may have new EDUs queued. */
  onRemoteQueued?: (destinations: string[]) => void;
}

/**
 * The device-list stream as clients see it. Without rooms, who is told is decided by tracking:
 * a user is told about itself and about every user whose keys it has queried.
 *
 * Each process keeps the newest stream position it knows of (its own writes, and other
 * processes' through `observe`), so a sync whose token is already there answers without a query:
 * the common case, and the one the woken-sync latency depends on. A position learned late only
 * delays a change to the next sync; a token never claims a position whose changes were not read.
 */
export class DeviceLists {
  private readonly store: DeviceListsStore;
  private known: number | null = null;

  constructor(private readonly deps: DeviceListsDeps) {
    this.store = new DeviceListsStore(deps.db);
  }

  /** A position another process wrote (or this one read). */
  observe(position: number): void {
    if (this.known === null || position > this.known) this.known = position;
  }

  /** Other processes' positions may have been missed: read the stream's position again when next needed. */
  forgetPosition(): void {
    this.known = null;
  }

  private async knownPosition(): Promise<number> {
    if (this.known === null) this.observe(await this.store.position());
    return this.known ?? 0;
  }

  /** Called after a change committed at `position`: wakes the long-polls of everyone told. */
  async changed(position: number, userIds: readonly string[]): Promise<void> {
    if (position <= 0 || userIds.length === 0) return;
    this.observe(position);
    const [devices, destinations] = await Promise.all([this.store.devicesToTell(userIds), this.deps.onRemoteQueued === undefined ? [] : this.store.remoteTrackersOf(userIds)]);
    for (const d of devices) this.deps.notifier.notify(d.userId, d.deviceId);
    this.deps.publish?.(position, devices);
    if (destinations.length > 0) this.deps.onRemoteQueued?.(destinations);
  }

  /** As `changed`, for a change whose caller did not keep the position (device deletion, renames). */
  async changedNow(userIds: readonly string[]): Promise<void> {
    await this.changed(await this.store.position(), userIds);
  }

  /** Another server follows these local users from now on (its users asked for their keys). */
  trackRemotely(destination: string, userIds: readonly string[]): Promise<void> {
    return this.store.trackRemotely(destination, userIds);
  }

  userPositions(userIds: readonly string[]): Promise<Map<string, number>> {
    return this.store.userPositions(userIds);
  }

  /** `tracker` is told about `targets` from now on. */
  track(tracker: string, targets: readonly string[]): Promise<void> {
    return this.store.track(tracker, targets);
  }

  /**
   * What a sync (or /keys/changes) from `after` tells `userId`. No `after` (an initial sync, or
   * a token from before device lists) reports nothing and starts at the newest position.
   */
  async since(userId: string, after: number | null, upTo: number | null = null): Promise<DeviceListDelta> {
    const known = await this.knownPosition();
    if (after === null) return { changed: [], left: [], position: upTo ?? known };
    if (after >= known || (upTo !== null && after >= upTo)) return { changed: [], left: [], position: after };
    const { changed, position } = await this.store.changedFor(userId, after, upTo);
    this.observe(position);
    return { changed, left: [], position };
  }
}
