import { sql } from 'drizzle-orm';
import type { Db } from './database.ts';
import { queryRows } from '../shared/query-rows.ts';

/** The transaction handle drizzle gives `db.transaction`'s callback. */
export type Tx = Parameters<Parameters<Db['transaction']>[0]>[0];

/**
 * The device-list stream and who follows whom in it. Without rooms, user A "tracks" user B once
 * A has queried B's keys; A's devices are then told (in /sync `device_lists.changed` and
 * `/keys/changes`) whenever B's devices or keys change. Every user tracks itself.
 */
export class DeviceListsStore {
  constructor(private readonly db: Db) {}

  /**
   * Records that these users' device lists changed, inside the caller's transaction, and
   * returns the new stream position. The EXCLUSIVE lock (readers are not blocked) makes stream
   * ids commit in the order they are drawn: a reader that saw id N will never later see an id
   * below N appear, so a sync position can never skip a change.
   */
  static async appendChanges(tx: Tx | Db, userIds: readonly string[]): Promise<number> {
    if (userIds.length === 0) return 0;
    await tx.execute(sql`lock table device_list_changes in exclusive mode`);
    const rows = await queryRows<{ position: string | number | null }>(
      tx as Db,
      sql`insert into device_list_changes (user_id, created_ts)
          select u, ${Date.now()} from jsonb_array_elements_text(${JSON.stringify([...new Set(userIds)])}::jsonb) as u
          returning stream_id as position`,
    );
    return Math.max(...rows.map((r) => Number(r.position)));
  }

  async position(): Promise<number> {
    const rows = await queryRows<{ position: string | number | null }>(this.db, sql`select coalesce(max(stream_id), 0) as position from device_list_changes`);
    return Number(rows[0]?.position ?? 0);
  }

  /** `tracker` follows `targets` from now on (idempotent). */
  async track(tracker: string, targets: readonly string[]): Promise<void> {
    const others = [...new Set(targets)].filter((t) => t !== tracker);
    if (others.length === 0) return;
    await this.db.execute(sql`
      insert into device_list_trackers (tracker_user_id, target_user_id, created_ts)
      select ${tracker}, t, ${Date.now()} from jsonb_array_elements_text(${JSON.stringify(others)}::jsonb) as t
      on conflict do nothing`);
  }

  /**
   * Users whose device lists changed after `after` up to `upTo` that `userId` follows (itself
   * included), and the position this answer reaches: the stream's newest id, read in the same
   * snapshot, so nothing between is skipped.
   */
  async changedFor(userId: string, after: number, upTo: number | null): Promise<{ changed: string[]; position: number }> {
    const rows = await queryRows<{ user_id: string | null; position: string | number }>(
      this.db,
      sql`with top as (select coalesce(max(stream_id), 0) as position from device_list_changes)
          select c.user_id, top.position from top
          left join lateral (
            select distinct c.user_id from device_list_changes c
            where c.stream_id > ${after} and c.stream_id <= least(top.position, ${upTo ?? Number.MAX_SAFE_INTEGER}::bigint)
              and (c.user_id = ${userId}
                   or exists (select 1 from device_list_trackers t where t.tracker_user_id = ${userId} and t.target_user_id = c.user_id))
          ) c on true`,
    );
    const position = Number(rows[0]?.position ?? 0);
    return {
      changed: rows.flatMap((r) => (r.user_id === null ? [] : [r.user_id])),
      position: upTo === null ? position : Math.min(position, upTo),
    };
  }

  /** The devices to wake when these users' lists change: theirs and those of everyone tracking them. */
  async devicesToTell(userIds: readonly string[]): Promise<{ userId: string; deviceId: string }[]> {
    const rows = await queryRows<{ user_id: string; device_id: string }>(
      this.db,
      sql`with changed as (select u from jsonb_array_elements_text(${JSON.stringify([...new Set(userIds)])}::jsonb) as u),
          told as (select u as user_id from changed
                   union select t.tracker_user_id from device_list_trackers t join changed on t.target_user_id = changed.u)
          select d.user_id, d.device_id from devices d join told on d.user_id = told.user_id`,
    );
    return rows.map((r) => ({ userId: r.user_id, deviceId: r.device_id }));
  }
}
