import { bigint, bigserial, integer, pgTable, text, uniqueIndex } from 'drizzle-orm/pg-core';

/** Milliseconds since the epoch, as everywhere in Matrix. */
const ms = (name: string) => bigint(name, { mode: 'number' });

/**
 * Versioned server franking keys: an HMAC key (secret, never leaves the server) and an Ed25519
 * signing key whose public half is published. The highest version franks new messages; older
 * versions are kept so franks made with them can still be verified and reported.
 */
export const frankingKeys = pgTable('franking_keys', {
  version: integer('version').primaryKey(),
  // Unpadded base64 of 32 random bytes each; kept in the database like the federation signing
  // key, so every server process franks and verifies with the same keys.
  hmacKey: text('hmac_key').notNull(),
  signingSeed: text('signing_seed').notNull(),
  publicKey: text('public_key').notNull(),
  createdTs: ms('created_ts').notNull(),
  retiredTs: ms('retired_ts'),
});

/** Abuse reports whose franks verified, for moderators. */
export const frankingReports = pgTable(
  'franking_reports',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    reporterUserId: text('reporter_user_id').notNull(),
    reporterDeviceId: text('reporter_device_id'),
    // The reported message's sender, as the server recorded it when franking (not as claimed).
    sender: text('sender').notNull(),
    context: text('context').notNull(),
    acceptedTs: ms('accepted_ts').notNull(),
    keyVersion: integer('key_version').notNull(),
    serverFrank: text('server_frank').notNull(),
    message: text('message').notNull(),
    reason: text('reason'),
    createdTs: ms('created_ts').notNull(),
  },
  // One report per reporter and frank: reporting the same message twice changes nothing.
  (t) => [uniqueIndex('franking_reports_once').on(t.reporterUserId, t.serverFrank)],
);
