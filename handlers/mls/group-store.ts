import { sql, type SQL } from 'drizzle-orm';
import type { Db } from '../../src/sdk/index.ts';
import type { Family } from './event-types.ts';

export interface DeviceRef {
  userId: string;
  deviceId: string;
}

export interface CommitAttempt {
  groupId: string;
  /** The epoch the commit was made in (its framing's epoch). */
  epoch: number;
  committer: DeviceRef;
  /** The committer's event family: a group created by this commit fans out in it. */
  family: Family;
  commitSha256: string;
  added: readonly DeviceRef[];
  removed: readonly DeviceRef[];
}

export type CommitOutcome =
  /** This commit advanced the group; `recipients` are the member devices before it, minus the committer. */
  | { kind: 'accepted'; epoch: number; recipients: DeviceRef[]; created: boolean; family: Family }
  /** The same commit was accepted before (a retry after a lost confirmation). */
  | { kind: 'duplicate'; epoch: number }
  | { kind: 'rejected'; reason: 'wrong_epoch' | 'not_member' | 'unknown_group'; epoch: number | null };

export type MemberCheck =
  | { kind: 'ok'; recipients: DeviceRef[]; family: Family }
  | { kind: 'rejected'; reason: 'wrong_epoch' | 'not_member' | 'unknown_group'; epoch: number | null };

type Executor = Pick<Db, 'execute'>;

// PGlite answers `{rows}`, postgres.js an array.
async function rows<T>(db: Executor, query: SQL): Promise<T[]> {
  const result: unknown = await db.execute(query);
  return Array.isArray(result) ? (result as T[]) : (result as { rows: T[] }).rows;
}

const toDevice = (r: { user_id: string; device_id: string }): DeviceRef => ({ userId: r.user_id, deviceId: r.device_id });

/**
 * Group state for the delivery service. The one rule that matters — exactly one commit per
 * epoch — is a conditional UPDATE in the database, so it holds across connections and server
 * processes: concurrent UPDATEs of one row serialise on its row lock, and each re-checks
 * `epoch = <its epoch>` against the winner's new row, so only the first can match.
 */
export class GroupStore {
  constructor(private readonly db: Db) {}

  async tryCommit(c: CommitAttempt, now = Date.now()): Promise<CommitOutcome> {
    return this.db.transaction(async (tx) => {
      const advanced = await rows<{ epoch: string | number; family: Family }>(
        tx,
        sql`update mls_groups set epoch = epoch + 1, last_commit_sha256 = ${c.commitSha256}, updated_ts = ${now}
            where group_id = ${c.groupId} and epoch = ${c.epoch}
              and exists (select 1 from mls_group_members m
                          where m.group_id = ${c.groupId} and m.user_id = ${c.committer.userId} and m.device_id = ${c.committer.deviceId})
            returning epoch, family`,
      );
      if (advanced[0] !== undefined) {
        const newEpoch = Number(advanced[0].epoch);
        // The row lock taken by the UPDATE is held until commit, so membership cannot change under us.
        const before = (
          await rows<{ user_id: string; device_id: string }>(
            tx,
            sql`select user_id, device_id from mls_group_members where group_id = ${c.groupId} order by user_id, device_id`,
          )
        ).map(toDevice);
        for (const d of c.removed) {
          await tx.execute(sql`delete from mls_group_members where group_id = ${c.groupId} and user_id = ${d.userId} and device_id = ${d.deviceId}`);
        }
        await this.addMembers(tx, c.groupId, c.added, newEpoch);
        const recipients = before.filter((d) => !(d.userId === c.committer.userId && d.deviceId === c.committer.deviceId));
        return { kind: 'accepted', epoch: newEpoch, recipients, created: false, family: advanced[0].family };
      }

      // A commit for epoch 0 of a group nobody registered yet creates it (the creator's first
      // commit, usually adding the first members); a concurrent creator loses on the primary key.
      if (c.epoch === 0) {
        const created = await rows<{ epoch: string | number }>(
          tx,
          sql`insert into mls_groups (group_id, epoch, creator_user_id, last_commit_sha256, family, created_ts, updated_ts)
              values (${c.groupId}, 1, ${c.committer.userId}, ${c.commitSha256}, ${c.family}, ${now}, ${now})
              on conflict (group_id) do nothing
              returning epoch`,
        );
        if (created[0] !== undefined) {
          await this.addMembers(tx, c.groupId, [c.committer, ...c.added], 1);
          return { kind: 'accepted', epoch: 1, recipients: [], created: true, family: c.family };
        }
      }

      const [group] = await rows<{ epoch: string | number; last_commit_sha256: string | null; is_member: boolean }>(
        tx,
        sql`select g.epoch, g.last_commit_sha256,
                   exists (select 1 from mls_group_members m
                           where m.group_id = g.group_id and m.user_id = ${c.committer.userId} and m.device_id = ${c.committer.deviceId}) as is_member
            from mls_groups g where g.group_id = ${c.groupId}`,
      );
      if (group === undefined) return { kind: 'rejected', reason: 'unknown_group', epoch: null };
      const current = Number(group.epoch);
      // A non-member learns nothing about the group, not even its epoch (nor that a replayed commit won).
      if (!group.is_member) return { kind: 'rejected', reason: 'not_member', epoch: null };
      if (current === c.epoch + 1 && group.last_commit_sha256 === c.commitSha256) return { kind: 'duplicate', epoch: current };
      return { kind: 'rejected', reason: 'wrong_epoch', epoch: current };
    });
  }

  /** For application messages and proposals: the sender is a member, and the epoch is current. */
  async checkMember(groupId: string, epoch: number, sender: DeviceRef): Promise<MemberCheck> {
    const members = await rows<{ epoch: string | number; family: Family; user_id: string | null; device_id: string | null }>(
      this.db,
      sql`select g.epoch, g.family, m.user_id, m.device_id
          from mls_groups g left join mls_group_members m on m.group_id = g.group_id
          where g.group_id = ${groupId} order by m.user_id, m.device_id`,
    );
    if (members[0] === undefined) return { kind: 'rejected', reason: 'unknown_group', epoch: null };
    const devices = members.filter((m) => m.user_id !== null && m.device_id !== null).map((m) => toDevice(m as { user_id: string; device_id: string }));
    const isSender = (d: DeviceRef) => d.userId === sender.userId && d.deviceId === sender.deviceId;
    if (!devices.some(isSender)) return { kind: 'rejected', reason: 'not_member', epoch: null };
    const current = Number(members[0].epoch);
    if (current !== epoch) return { kind: 'rejected', reason: 'wrong_epoch', epoch: current };
    return { kind: 'ok', recipients: devices.filter((d) => !isSender(d)), family: members[0].family };
  }

  private async addMembers(tx: Executor, groupId: string, devices: readonly DeviceRef[], epoch: number): Promise<void> {
    for (const d of devices) {
      await tx.execute(
        sql`insert into mls_group_members (group_id, user_id, device_id, added_epoch)
            values (${groupId}, ${d.userId}, ${d.deviceId}, ${epoch}) on conflict do nothing`,
      );
    }
  }
}
