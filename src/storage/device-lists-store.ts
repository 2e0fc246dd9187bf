import { sql } from 'drizzle-orm';
import type { Db } from './drivers/database.ts';
import { outboxInsertSql } from './federation-outbox-store.ts';
import { queryRows } from '../shared/query-rows.ts';

/** A change to a user's device list: one device, or (null) the user's cross-signing keys. */
export interface DeviceListChange {
  userId: string;
  deviceId: string | null;
}

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
   * Records changes to users' device lists (a device, or the cross-signing keys when `deviceId`
   * is null) inside the caller's transaction, and returns the new stream position. The EXCLUSIVE
   * lock (readers are not blocked) makes stream ids commit in the order they are drawn: a reader
   * that saw id N will never later see an id below N appear, so a sync position can never skip a
   * change.
   *
   * In the same statement, every other server following a changed user (see
   * `device_list_remote_trackers`) gets its EDU queued in the federation outbox, built from the
   * state the transaction has written: `m.device_list_update` with the device's keys (its own
   * signatures merged in) or `deleted`, chained by `prev_id` to the last one that server was
   * sent; `m.signing_key_update` with the cross-signing keys. Durable and ordered as to-device
   * EDUs are: one queue, one sender.
   */
  static async appendChanges(tx: Tx | Db, changes: readonly DeviceListChange[]): Promise<number> {
    if (changes.length === 0) return 0;
    await tx.execute(sql`lock table device_list_changes in exclusive mode`);
    const rows = await queryRows<{ position: string | number | null }>(
      tx as Db,
      sql`with added as (
            insert into device_list_changes (user_id, device_id, created_ts)
            select x.u, x.d, ${Date.now()}
            from rows from (jsonb_to_recordset(${JSON.stringify(changes.map((c) => ({ u: c.userId, d: c.deviceId })))}::jsonb) as (u text, d text)) with ordinality as x(u, d, n)
            order by x.n
            returning stream_id, user_id, device_id),
          per_destination as (
            select t.destination, a.stream_id, a.user_id, a.device_id,
                   coalesce(lag(a.stream_id) over (partition by t.destination, a.user_id, a.device_id is null order by a.stream_id), t.last_stream_id) as prev_id
            from added a join device_list_remote_trackers t on t.user_id = a.user_id),
          queued as (
            ${outboxInsertSql(
              sql`select p.destination, '', '', p.user_id, coalesce(p.device_id, ''),
                   case when p.device_id is null then
                     (jsonb_build_object('user_id', p.user_id)
                      || coalesce((select jsonb_object_agg(case k.key_type when 'master' then 'master_key' else 'self_signing_key' end, k.key_json::jsonb)
                                   from e2e_cross_signing_keys k where k.user_id = p.user_id and k.key_type in ('master', 'self_signing')), '{}'::jsonb))::text
                   else
                     (jsonb_build_object('user_id', p.user_id, 'device_id', p.device_id, 'stream_id', p.stream_id,
                                         'prev_id', case when p.prev_id is null then '[]'::jsonb else jsonb_build_array(p.prev_id) end,
                                         'deleted', dk.key_json is null)
                      || case when dk.key_json is null then '{}'::jsonb else jsonb_build_object('keys', jsonb_set(dk.key_json::jsonb, '{signatures}',
                           coalesce(dk.key_json::jsonb -> 'signatures', '{}'::jsonb) || jsonb_build_object(p.user_id,
                             coalesce(dk.key_json::jsonb -> 'signatures' -> p.user_id, '{}'::jsonb)
                             || coalesce((select jsonb_object_agg(s.signer_key_id, s.signature) from e2e_signatures s
                                          where s.target_user_id = p.user_id and s.target_key_id = p.device_id and s.signer_user_id = p.user_id), '{}'::jsonb)))) end
                      || case when d.display_name is null then '{}'::jsonb else jsonb_build_object('device_display_name', d.display_name) end)::text
                   end,
                   case when p.device_id is null then 'm.signing_key_update' else 'm.device_list_update' end
            from per_destination p
            left join e2e_device_keys dk on p.device_id is not null and dk.user_id = p.user_id and dk.device_id = p.device_id
            left join devices d on p.device_id is not null and d.user_id = p.user_id and d.device_id = p.device_id
            order by p.stream_id, p.destination`,
              Date.now(),
            )}),
          advanced as (
            update device_list_remote_trackers t set last_stream_id = m.stream_id
            from (select user_id, max(stream_id) as stream_id from added where device_id is not null group by user_id) m
            where t.user_id = m.user_id)
          select max(stream_id) as position from added`,
    );
    return Number(rows[0]?.position ?? 0);
  }

  /** `destination` follows these local users' device lists from now on (it asked for their keys). */
  async trackRemotely(destination: string, userIds: readonly string[]): Promise<void> {
    if (userIds.length === 0) return;
    // SHARE waits for changes being written and holds new ones back until this commits: a change
    // either is in what the caller reads next, or sees this row and queues an EDU for it.
    await this.db.transaction(async (tx) => {
      await tx.execute(sql`lock table device_list_changes in share mode`);
      await tx.execute(sql`
        insert into device_list_remote_trackers (destination, user_id, last_stream_id, created_ts)
        select ${destination}, u, null, ${Date.now()} from jsonb_array_elements_text(${JSON.stringify([...new Set(userIds)])}::jsonb) as u
        on conflict do nothing`);
    });
  }

  /** The servers following these users, whose outbox a change may have filled. */
  async remoteTrackersOf(userIds: readonly string[]): Promise<string[]> {
    const rows = await queryRows<{ destination: string }>(
      this.db,
      sql`select distinct destination from device_list_remote_trackers where user_id in (select jsonb_array_elements_text(${JSON.stringify([...new Set(userIds)])}::jsonb))`,
    );
    return rows.map((r) => r.destination);
  }

  /** The newest device-list stream id of each of these users (0 when none), for `/user/devices`. */
  async userPositions(userIds: readonly string[]): Promise<Map<string, number>> {
    const rows = await queryRows<{ user_id: string; position: string | number }>(
      this.db,
      sql`select user_id, max(stream_id) as position from device_list_changes
          where device_id is not null and user_id in (select jsonb_array_elements_text(${JSON.stringify([...new Set(userIds)])}::jsonb)) group by user_id`,
    );
    return new Map(rows.map((r) => [r.user_id, Number(r.position)]));
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
