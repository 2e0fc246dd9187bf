import { bigint, pgTable, primaryKey, text } from 'drizzle-orm/pg-core';

/** Milliseconds since the epoch, as everywhere in Matrix. */
const ms = (name: string) => bigint(name, { mode: 'number' });

/**
 * Each group the delivery service orders commits for. `epoch` only ever moves by a conditional
 * UPDATE (`… where epoch = <the commit's epoch>`), which is what makes exactly one commit per
 * epoch win, whichever process or connection receives it.
 */
export const mlsGroups = pgTable('mls_groups', {
  // The MLS group_id, unpadded base64.
  groupId: text('group_id').primaryKey(),
  epoch: bigint('epoch', { mode: 'number' }).notNull(),
  creatorUserId: text('creator_user_id').notNull(),
  // SHA-256 of the last accepted commit, so a committer retrying after a lost confirmation is
  // answered "accepted" again instead of "wrong epoch".
  lastCommitSha256: text('last_commit_sha256'),
  // The event family of the commit that created the group ('m' or 'org.matrix.msc4244'): its
  // commits, Welcomes and relays go out in it. Groups from before the stable names are unstable.
  family: text('family').notNull().default('org.matrix.msc4244'),
  createdTs: ms('created_ts').notNull(),
  updatedTs: ms('updated_ts').notNull(),
});

/** The member devices of each group, as declared by the committers (commit_info.added/removed). */
export const mlsGroupMembers = pgTable(
  'mls_group_members',
  {
    groupId: text('group_id').notNull(),
    userId: text('user_id').notNull(),
    deviceId: text('device_id').notNull(),
    addedEpoch: bigint('added_epoch', { mode: 'number' }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.groupId, t.userId, t.deviceId] })],
);
