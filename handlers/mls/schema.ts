import { sql } from 'drizzle-orm';
import { bigint, bigserial, boolean, index, pgTable, primaryKey, text, uniqueIndex } from 'drizzle-orm/pg-core';

/** Milliseconds since the epoch, as everywhere in Matrix. */
const ms = (name: string) => bigint(name, { mode: 'number' });

/**
 * The KeyPackage directory: packages uploaded by local devices, each claimed at most once
 * (RFC 9420 §16.8, RFC 9750 §5.1), except a device's single last-resort package, which is
 * handed out when nothing else is left and never deleted by a claim.
 */
export const mlsKeyPackages = pgTable(
  'mls_key_packages',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    userId: text('user_id').notNull(),
    deviceId: text('device_id').notNull(),
    // KeyPackageRef (RFC 9420 §5.2), unpadded base64: the same package uploaded twice is stored once.
    ref: text('ref').notNull(),
    ciphersuite: text('ciphersuite').notNull(),
    // Exactly the bytes the device uploaded (unpadded base64 MLSMessage), handed out as they are.
    keyPackage: text('key_package').notNull(),
    lastResort: boolean('last_resort').notNull(),
    createdTs: ms('created_ts').notNull(),
  },
  (t) => [
    uniqueIndex('mls_key_packages_ref').on(t.userId, t.deviceId, t.ref),
    // At most one last-resort package per device; a new upload replaces it.
    uniqueIndex('mls_key_packages_last_resort').on(t.userId, t.deviceId).where(sql`last_resort`),
    index('mls_key_packages_claim').on(t.userId, t.deviceId, t.lastResort, t.id),
  ],
);

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
