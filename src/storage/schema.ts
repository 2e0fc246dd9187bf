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
    // Set for an EDU of another type (a device-list update): `content` is its whole content.
    eduType: text('edu_type'),
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
    // Committed without waiting for its flush (LazyCommits): a retry must flush before answering.
    lazy: boolean('lazy').notNull().default(false),
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

/** Each device's identity keys as the device uploaded and signed them (JSON text, `signatures` included). */
export const e2eDeviceKeys = pgTable(
  'e2e_device_keys',
  {
    userId: text('user_id').notNull(),
    deviceId: text('device_id').notNull(),
    keyJson: text('key_json').notNull(),
    createdTs: ms('created_ts').notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.deviceId] })],
);

/** Unclaimed one-time keys; a claim deletes the row it hands out, so no key goes to two claimers. */
export const e2eOneTimeKeys = pgTable(
  'e2e_one_time_keys',
  {
    userId: text('user_id').notNull(),
    deviceId: text('device_id').notNull(),
    algorithm: text('algorithm').notNull(),
    keyId: text('key_id').notNull(),
    keyJson: text('key_json').notNull(),
    // JSON the algorithm's module returned when it accepted the key (its claim matcher reads it).
    metadata: text('metadata'),
    createdTs: ms('created_ts').notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.deviceId, t.algorithm, t.keyId] })],
);

/** One fallback key per device and algorithm, handed out when no one-time key is left, until replaced. */
export const e2eFallbackKeys = pgTable(
  'e2e_fallback_keys',
  {
    userId: text('user_id').notNull(),
    deviceId: text('device_id').notNull(),
    algorithm: text('algorithm').notNull(),
    keyId: text('key_id').notNull(),
    keyJson: text('key_json').notNull(),
    metadata: text('metadata'),
    used: boolean('used').notNull().default(false),
  },
  (t) => [primaryKey({ columns: [t.userId, t.deviceId, t.algorithm] })],
);

/** Cross-signing keys: `master`, `self_signing`, `user_signing`, one of each per user. */
export const e2eCrossSigningKeys = pgTable(
  'e2e_cross_signing_keys',
  {
    userId: text('user_id').notNull(),
    keyType: text('key_type').notNull(),
    keyJson: text('key_json').notNull(),
    createdTs: ms('created_ts').notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.keyType] })],
);

/**
 * Signatures uploaded with /keys/signatures/upload, merged into /keys/query answers. The target
 * is a device (`target_key_id` = its device ID) or a cross-signing key (its public key).
 */
export const e2eSignatures = pgTable(
  'e2e_signatures',
  {
    signerUserId: text('signer_user_id').notNull(),
    signerKeyId: text('signer_key_id').notNull(),
    targetUserId: text('target_user_id').notNull(),
    targetKeyId: text('target_key_id').notNull(),
    signature: text('signature').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.signerUserId, t.signerKeyId, t.targetUserId, t.targetKeyId] }),
    index('e2e_signatures_target').on(t.targetUserId, t.targetKeyId),
  ],
);

/**
 * The device-list stream: one row each time a user's devices or keys change. Writers hold an
 * EXCLUSIVE lock on the table while they insert, so stream ids commit in order and a reader
 * that has seen id N has seen every id below it.
 */
export const deviceListChanges = pgTable(
  'device_list_changes',
  {
    streamId: bigserial('stream_id', { mode: 'number' }).primaryKey(),
    userId: text('user_id').notNull(),
    // The device that changed; null for the user's cross-signing keys.
    deviceId: text('device_id'),
    createdTs: ms('created_ts').notNull(),
  },
  (t) => [index('device_list_changes_user').on(t.userId, t.streamId)],
);

/**
 * Other servers that follow our users' device lists (one of their users queried them): each gets
 * an `m.device_list_update` EDU per change, chained by `prev_id` from `last_stream_id`.
 */
export const deviceListRemoteTrackers = pgTable(
  'device_list_remote_trackers',
  {
    destination: text('destination').notNull(),
    userId: text('user_id').notNull(),
    lastStreamId: bigint('last_stream_id', { mode: 'number' }),
    createdTs: ms('created_ts').notNull(),
  },
  (t) => [primaryKey({ columns: [t.destination, t.userId] }), index('device_list_remote_trackers_user').on(t.userId)],
);

/**
 * What we know of a remote user's devices and cross-signing keys (checked signatures only). Served
 * from here only while its server keeps us told (`subscribed`: it has sent us a device-list EDU
 * for the user) and nothing is missing (`stale`); otherwise each query asks the server again.
 */
export const remoteDeviceLists = pgTable('remote_device_lists', {
  userId: text('user_id').primaryKey(),
  // The user's stream id as its server last gave it (EDU or /user/devices); null if unknown.
  streamId: bigint('stream_id', { mode: 'number' }),
  // {devices: {id: device keys}, master_key?, self_signing_key?} as JSON text.
  keysJson: text('keys_json').notNull(),
  subscribed: boolean('subscribed').notNull().default(false),
  stale: boolean('stale').notNull().default(false),
  fetchedTs: ms('fetched_ts').notNull(),
});

/** Who is told about whose device-list changes (there are no rooms): set by /keys/query. */
export const deviceListTrackers = pgTable(
  'device_list_trackers',
  {
    trackerUserId: text('tracker_user_id').notNull(),
    targetUserId: text('target_user_id').notNull(),
    createdTs: ms('created_ts').notNull(),
  },
  (t) => [primaryKey({ columns: [t.trackerUserId, t.targetUserId] }), index('device_list_trackers_target').on(t.targetUserId)],
);

/**
 * Each user's dehydrated device (MSC3814): a device with no access token whose to-device
 * messages wait in its inbox until a new login rehydrates it. `device_data` is the client's
 * encrypted pickle, kept as JSON text and returned as it came.
 */
export const dehydratedDevices = pgTable('dehydrated_devices', {
  userId: text('user_id').primaryKey(),
  deviceId: text('device_id').notNull(),
  deviceData: text('device_data').notNull(),
  createdTs: ms('created_ts').notNull(),
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
