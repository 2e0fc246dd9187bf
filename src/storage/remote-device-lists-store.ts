import { sql } from 'drizzle-orm';
import type { Db } from './drivers/database.ts';
import { DeviceListsStore } from './device-lists-store.ts';
import { queryRows } from '../shared/query-rows.ts';

/** A remote user's keys as their server gave them (each signature already checked). */
export interface RemoteUserKeys {
  devices: Record<string, Record<string, unknown>>;
  master_key?: Record<string, unknown>;
  self_signing_key?: Record<string, unknown>;
}

export interface CachedRemoteUser {
  keys: RemoteUserKeys;
  streamId: number | null;
  subscribed: boolean;
  stale: boolean;
}

/** The cache of remote users' device lists (see `remote_device_lists`). */
export class RemoteDeviceListsStore {
  constructor(private readonly db: Db) {}

  async get(userIds: readonly string[]): Promise<Map<string, CachedRemoteUser>> {
    if (userIds.length === 0) return new Map();
    const rows = await queryRows<{ user_id: string; keys_json: string; stream_id: string | number | null; subscribed: boolean; stale: boolean }>(
      this.db,
      sql`select user_id, keys_json, stream_id, subscribed, stale from remote_device_lists
          where user_id in (select jsonb_array_elements_text(${JSON.stringify([...new Set(userIds)])}::jsonb))`,
    );
    return new Map(
      rows.map((r) => [r.user_id, { keys: JSON.parse(r.keys_json) as RemoteUserKeys, streamId: r.stream_id === null ? null : Number(r.stream_id), subscribed: r.subscribed, stale: r.stale }]),
    );
  }

  /**
   * Stores what the user's server said; when that differs from what was cached before, records a
   * device-list change (so local users tracking them are told) and returns its position, else 0.
   * `streamId` undefined keeps the cached one; `subscribed` undefined keeps the flag.
   */
  async put(userId: string, keys: RemoteUserKeys, opts: { streamId?: number | null; subscribed?: boolean }): Promise<number> {
    const json = JSON.stringify(keys);
    return this.db.transaction(async (tx) => {
      const before = await queryRows<{ keys_json: string }>(tx as unknown as Db, sql`select keys_json from remote_device_lists where user_id = ${userId} for update`);
      await tx.execute(sql`
        insert into remote_device_lists as r (user_id, stream_id, keys_json, subscribed, stale, fetched_ts)
        values (${userId}, ${opts.streamId ?? null}, ${json}, ${opts.subscribed ?? false}, false, ${Date.now()})
        on conflict (user_id) do update set
          keys_json = excluded.keys_json, stale = false, fetched_ts = excluded.fetched_ts,
          stream_id = ${opts.streamId === undefined ? sql`r.stream_id` : sql`excluded.stream_id`},
          subscribed = ${opts.subscribed === undefined ? sql`r.subscribed` : sql`excluded.subscribed`}`);
      const previous = before[0]?.keys_json;
      if (previous === undefined || previous === json) return 0;
      return DeviceListsStore.appendChanges(tx, [{ userId, deviceId: null }]);
    });
  }

  /**
   * The user's server told us of a change we could not apply (a gap in its `prev_id` chain, or
   * a user we hold nothing of): what we hold is stale until a resync, and the server keeps us told.
   * Records the change for local trackers and returns its position.
   */
  async markStale(userId: string): Promise<number> {
    return this.db.transaction(async (tx) => {
      await tx.execute(sql`
        insert into remote_device_lists as r (user_id, stream_id, keys_json, subscribed, stale, fetched_ts)
        values (${userId}, null, '{"devices":{}}', true, true, ${Date.now()})
        on conflict (user_id) do update set subscribed = true, stale = true`);
      return DeviceListsStore.appendChanges(tx, [{ userId, deviceId: null }]);
    });
  }

  /** Remote users some local user tracks whose server does not keep us told: the ones to poll. */
  async unsubscribedTracked(limit: number, fetchedBefore: number): Promise<string[]> {
    const rows = await queryRows<{ user_id: string }>(
      this.db,
      sql`select r.user_id from remote_device_lists r
          where not r.subscribed and r.fetched_ts < ${fetchedBefore}
            and exists (select 1 from device_list_trackers t where t.target_user_id = r.user_id)
          order by r.fetched_ts limit ${limit}`,
    );
    return rows.map((r) => r.user_id);
  }
}
