import { bigint, bigserial, boolean, index, pgTable, primaryKey, text, uniqueIndex } from 'drizzle-orm/pg-core';

/** Timestamps are milliseconds since the epoch, as Matrix uses them everywhere. */
const ms = (name: string) => bigint(name, { mode: 'number' });

export const users = pgTable('users', {
  userId: text('user_id').primaryKey(),
  localpart: text('localpart').notNull(),
  passwordHash: text('password_hash'),
  createdTs: ms('created_ts').notNull(),
  deactivated: boolean('deactivated').notNull().default(false),
});

export const devices = pgTable(
  'devices',
  {
    userId: text('user_id').notNull(),
    deviceId: text('device_id').notNull(),
    displayName: text('display_name'),
    // sha256 of the access token; the token itself is never stored.
    tokenHash: text('token_hash'),
    createdTs: ms('created_ts').notNull(),
    lastSeenTs: ms('last_seen_ts'),
    lastSeenIp: text('last_seen_ip'),
  },
  (t) => [primaryKey({ columns: [t.userId, t.deviceId] }), uniqueIndex('devices_token_hash').on(t.tokenHash)],
);

/**
 * One row per message per local target device. `stream_id` is the to-device stream position;
 * senders lock the target device rows before drawing ids, so per device the ids are in commit
 * order and acknowledging "up to N" can never skip a message still being written.
 */
export const deviceInbox = pgTable(
  'device_inbox',
  {
    streamId: bigserial('stream_id', { mode: 'number' }).primaryKey(),
    userId: text('user_id').notNull(),
    deviceId: text('device_id').notNull(),
    sender: text('sender').notNull(),
    type: text('type').notNull(),
    // The content's JSON text: never queried, so not parsed into jsonb.
    content: text('content').notNull(),
    receivedTs: ms('received_ts').notNull(),
  },
  (t) => [index('device_inbox_device').on(t.userId, t.deviceId, t.streamId)],
);

/** Messages for users on other servers, waiting for the federation sender. */
export const federationOutbox = pgTable(
  'federation_outbox',
  {
    streamId: bigserial('stream_id', { mode: 'number' }).primaryKey(),
    destination: text('destination').notNull(),
    sender: text('sender').notNull(),
    type: text('type').notNull(),
    userId: text('user_id').notNull(),
    // A device ID or '*'; the remote server expands '*'.
    deviceId: text('device_id').notNull(),
    content: text('content').notNull(),
    createdTs: ms('created_ts').notNull(),
  },
  (t) => [index('federation_outbox_destination').on(t.destination, t.streamId)],
);

/** Client transaction IDs, so a retried request gets the first response and has no new effect. */
export const txnIds = pgTable(
  'txn_ids',
  {
    userId: text('user_id').notNull(),
    deviceId: text('device_id').notNull(),
    endpoint: text('endpoint').notNull(),
    txnId: text('txn_id').notNull(),
    response: text('response').notNull(),
    createdTs: ms('created_ts').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.userId, t.deviceId, t.endpoint, t.txnId] }),
    index('txn_ids_created').on(t.createdTs),
  ],
);

export const filters = pgTable(
  'filters',
  {
    filterId: bigserial('filter_id', { mode: 'number' }).primaryKey(),
    userId: text('user_id').notNull(),
    filterJson: text('filter_json').notNull(),
  },
  (t) => [index('filters_user').on(t.userId)],
);

/** User-interactive-auth sessions (spec §"User-Interactive Authentication API"). */
export const uiaSessions = pgTable('uia_sessions', {
  sessionId: text('session_id').primaryKey(),
  userId: text('user_id'),
  createdTs: ms('created_ts').notNull(),
});

/** This server's Ed25519 signing keys; in the database so every process signs with the same key. */
export const serverSigningKeys = pgTable('server_signing_keys', {
  keyId: text('key_id').primaryKey(),
  seed: text('seed').notNull(),
  createdTs: ms('created_ts').notNull(),
});

/** Other servers' verify keys, as fetched from their /_matrix/key/v2/server and verified. */
export const remoteServerKeys = pgTable(
  'remote_server_keys',
  {
    serverName: text('server_name').notNull(),
    keyId: text('key_id').notNull(),
    publicKey: text('public_key').notNull(),
    validUntilTs: ms('valid_until_ts').notNull(),
    fetchedTs: ms('fetched_ts').notNull(),
  },
  (t) => [primaryKey({ columns: [t.serverName, t.keyId] })],
);

/** (origin, message_id) of received m.direct_to_device EDUs, so a resent EDU is applied once. */
export const federationInboundMessages = pgTable(
  'federation_inbound_messages',
  {
    origin: text('origin').notNull(),
    messageId: text('message_id').notNull(),
    receivedTs: ms('received_ts').notNull(),
  },
  (t) => [primaryKey({ columns: [t.origin, t.messageId] }), index('federation_inbound_received').on(t.receivedTs)],
);

/**
 * The transaction being sent to a destination: kept so that a retry, even after a restart,
 * repeats the same txnId and body, and so that only the rows it carried are deleted on 200.
 */
export const federationPendingTxns = pgTable('federation_pending_txns', {
  destination: text('destination').primaryKey(),
  txnId: text('txn_id').notNull(),
  body: text('body').notNull(),
  // JSON array of the federation_outbox stream ids the body carries.
  streamIds: text('stream_ids').notNull(),
  createdTs: ms('created_ts').notNull(),
});

/**
 * To-device messages owed to an appservice (MSC4203), in arrival order. `inbox_stream_id` links
 * the device_inbox row: for an exclusive namespace it is deleted once the appservice has the
 * message; for an inclusive one it stays for /sync.
 */
export const appserviceQueue = pgTable(
  'appservice_queue',
  {
    streamId: bigserial('stream_id', { mode: 'number' }).primaryKey(),
    appserviceId: text('appservice_id').notNull(),
    inboxStreamId: bigint('inbox_stream_id', { mode: 'number' }),
    exclusive: boolean('exclusive').notNull(),
    type: text('type').notNull(),
    sender: text('sender').notNull(),
    content: text('content').notNull(),
    toUserId: text('to_user_id').notNull(),
    toDeviceId: text('to_device_id').notNull(),
    createdTs: ms('created_ts').notNull(),
  },
  (t) => [index('appservice_queue_as').on(t.appserviceId, t.streamId)],
);

/** The transaction being pushed to an appservice; a retry repeats exactly this txnId and body. */
export const appservicePendingTxns = pgTable('appservice_pending_txns', {
  appserviceId: text('appservice_id').primaryKey(),
  txnId: text('txn_id').notNull(),
  body: text('body').notNull(),
  // JSON arrays: the appservice_queue rows carried, and the device_inbox rows to drop on success.
  queueIds: text('queue_ids').notNull(),
  inboxIds: text('inbox_ids').notNull(),
  createdTs: ms('created_ts').notNull(),
});

/**
 * Which process is sending a queue (a federation destination, an appservice). A lease, not a
 * held row lock, so no connection stays open across the HTTP request; a dead process's lease
 * simply expires and another process takes the queue over.
 */
export const queueLeases = pgTable('queue_leases', {
  queue: text('queue').primaryKey(),
  holder: text('holder').notNull(),
  expiresTs: ms('expires_ts').notNull(),
});

/**
 * MSC3944: the (sender device, request_id) of each `m.room_key_request` / `m.secret.request`
 * (`action: request`) that a sync response has carried to a device, written just before the
 * response is sent. A cancellation finding a row here must be delivered; its key's row is then
 * deleted (the device will see that cancellation after everything it was sent). The rows outlive
 * the acknowledgement of the request itself, so a request_id re-used for a re-request (as the
 * spec asks) is still known to have reached the device. See ToDeviceService's cancellation path.
 */
export const toDeviceRequestReads = pgTable(
  'to_device_request_reads',
  {
    userId: text('user_id').notNull(),
    deviceId: text('device_id').notNull(),
    sender: text('sender').notNull(),
    type: text('type').notNull(),
    requestingDeviceId: text('requesting_device_id').notNull(),
    requestId: text('request_id').notNull(),
    readTs: ms('read_ts').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.userId, t.deviceId, t.sender, t.type, t.requestingDeviceId, t.requestId] }),
    index('to_device_request_reads_read').on(t.readTs),
  ],
);
