import * as v from 'valibot';
import { LOG_FORMATS, LOG_LEVELS } from '../logger.ts';
import { isValidServerName } from '../shared/user-id.ts';

/*
 * Every check carries its own message: valibot's defaults ("Invalid value: Expected <=65535 but
 * received 99999") name neither the setting's range nor what to write instead. The setting (and
 * the variable that set it) is named by loadConfig.
 */
const intInRange = (min: number, max: number, what = 'an integer') => {
  const message = `must be ${what} from ${min} to ${max}`;
  return v.pipe(v.number(message), v.integer(message), v.minValue(min, message), v.maxValue(max, message));
};
const numberInRange = (min: number, max: number) => {
  const message = `must be a number from ${min} to ${max}`;
  return v.pipe(v.number(message), v.minValue(min, message), v.maxValue(max, message));
};
const port = () => intInRange(0, 65535, 'a port number, an integer');
const nonEmptyString = () => v.pipe(v.string('must be a string'), v.minLength(1, 'must not be empty'));
const bool = () => v.boolean('must be true or false');
/** A group of settings: a YAML mapping of its own. */
const section = <E extends v.ObjectEntries>(entries: E) => v.strictObject(entries, 'must be a mapping of settings (key: value lines)');

/** The YAML file's shape, with each setting's default (exported for the README check). */
export const ConfigFileSchema = section({
  server_name: v.optional(
    v.pipe(v.string('must be a string'), v.check(isValidServerName, 'must be a valid Matrix server name (host[:port])')),
    'localhost:8008',
  ),
  listen: v.optional(
    section({
      host: v.optional(nonEmptyString(), '127.0.0.1'),
      port: v.optional(port(), 8008),
    }),
    {},
  ),
  database: v.optional(
    section({
      // A PostgreSQL URL; when absent the embedded PGlite database in data_dir is used.
      url: v.optional(v.pipe(v.string('must be a string'), v.regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL'))),
      // A direct connection (not a transaction pooler) for LISTEN and migrations' advisory lock; default: url.
      listen_url: v.optional(v.pipe(v.string('must be a string'), v.regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL'))),
      // How long a request waits for a database connection before it is answered 503.
      wait_timeout_ms: v.optional(intInRange(100, 600_000), 5_000),
      data_dir: v.optional(nonEmptyString(), './data/pglite'),
      // PGlite: fsync every commit, so that what was acknowledged survives an OS crash (see pglite-durable.ts).
      pglite_fsync: v.optional(bool(), true),
      // PGlite's buffer pool (shared_buffers). PGlite makes all of it resident at start; smaller
      // saves that memory, and costs throughput once queued messages outgrow it (pglite-durable.ts).
      pglite_shared_buffers_mb: v.optional(intInRange(1, 1024), 128),
      pool_size: v.optional(intInRange(1, 1000), 10),
      // Off for poolers that cannot keep a session's prepared statements (PgBouncer before 1.21 in transaction mode).
      prepared_statements: v.optional(bool(), true),
    }),
    {},
  ),
  registration: v.optional(
    section({
      // Default: open only when listening on loopback (decided after parsing).
      enabled: v.optional(bool()),
    }),
    {},
  ),
  limits: v.optional(
    section({
      sync_to_device_limit: v.optional(intInRange(1, 10_000), 100),
      max_request_bytes: v.optional(intInRange(1024, 1024 * 1024 * 1024), 10 * 1024 * 1024),
      max_sync_timeout_ms: v.optional(intInRange(0, 3_600_000), 300_000),
      txn_retention_hours: v.optional(intInRange(24, 24 * 365), 24),
      // Oldest messages beyond this many per device are dropped by maintenance (counted).
      device_queue_max: v.optional(intInRange(1, 100_000_000), 100_000),
      // Undelivered messages older than this are dropped by maintenance; 0 keeps them forever.
      to_device_ttl_hours: v.optional(intInRange(0, 24 * 3650), 0),
      maintenance_interval_s: v.optional(intInRange(1, 24 * 3600), 600),
    }),
    {},
  ),
  // Handler modules to load, in order. Absent means the three that ship, so that `npm start`
  // serves every example; franking without moderators until the operator names some.
  handlers: v.optional(
    v.array(
      v.strictObject(
        {
          module: nonEmptyString(),
          config: v.optional(v.unknown()),
        },
        'must be a mapping: { module: <name or path>, config: … }',
      ),
      'must be a list of { module, config } entries',
    ),
    [{ module: 'ping' }, { module: 'mls' }, { module: 'franking' }],
  ),
  federation: v.optional(
    section({
      enabled: v.optional(bool(), true),
      // A second listener for federation, e.g. TLS on 8448 (it serves the whole API).
      listen: v.optional(
        section({
          host: v.optional(nonEmptyString(), '0.0.0.0'),
          port: port(),
          tls_cert: v.optional(nonEmptyString()),
          tls_key: v.optional(nonEmptyString()),
        }),
      ),
      // PEM file of extra CAs to trust when dialling other servers (e.g. a test Synapse's).
      ca_file: v.optional(nonEmptyString()),
      // Test/development only: dial other servers over plain HTTP.
      allow_http: v.optional(bool(), false),
      // Test/development only: server name → base URL, bypassing server discovery.
      static_routes: v.optional(v.record(v.string(), v.pipe(v.string('must be a URL string'), v.url('must be a URL')), 'must be a mapping of server name to base URL'), {}),
      backoff_initial_ms: v.optional(intInRange(1, 3_600_000), 2_000),
      backoff_max_ms: v.optional(intInRange(1, 24 * 3_600_000), 3_600_000),
      inbound_dedupe_days: v.optional(intInRange(7, 365), 7),
      max_concurrent_destinations: v.optional(intInRange(1, 10_000), 50),
      destination_queue_max: v.optional(intInRange(1, 100_000_000), 100_000),
      // How often remote users that local users track, on servers that send no device-list
      // updates (Synapse without a shared room), are asked for their keys again; 0 never.
      remote_device_list_poll_s: v.optional(intInRange(0, 7 * 24 * 3600), 300),
    }),
    {},
  ),
  rate_limits: v.optional(
    section({
      // Per (user, device); per_second 0 turns the limit off. Appservices with
      // `rate_limited: false` in their registration are exempt.
      send_to_device: v.optional(
        section({
          per_second: v.optional(numberInRange(0, 1_000_000), 100),
          burst_count: v.optional(intInRange(1, 1_000_000), 500),
        }),
        {},
      ),
      // Per user: each claim uses up another user's one-time keys, so a client that claims in a
      // loop would drain them all. per_second 0 turns the limit off.
      keys_claim: v.optional(
        section({
          per_second: v.optional(numberInRange(0, 1_000_000), 10),
          burst_count: v.optional(intInRange(1, 1_000_000), 100),
        }),
        {},
      ),
    }),
    {},
  ),
  // Paths of appservice registration files (YAML).
  appservices: v.optional(v.array(nonEmptyString(), 'must be a list of file paths'), []),
  server_user: v.optional(
    section({
      // How long a sender's request waits for its server-user messages to be handled.
      dispatch_deadline_ms: v.optional(intInRange(0, 600_000), 5000),
      // How long a handler module's setup may take at start before the start fails.
      setup_deadline_ms: v.optional(intInRange(1, 600_000), 30_000),
      // How long shutdown waits for a module's in-flight handlers, and then for its stop.
      stop_deadline_ms: v.optional(intInRange(1, 600_000), 10_000),
    }),
    {},
  ),
  // Prometheus metrics on a listener of their own, loopback by default: they name users.
  metrics: v.optional(
    section({
      enabled: v.optional(bool(), true),
      host: v.optional(nonEmptyString(), '127.0.0.1'),
      port: v.optional(port(), 9464),
    }),
    {},
  ),
  log: v.optional(
    section({
      level: v.optional(v.picklist(LOG_LEVELS, `must be one of ${LOG_LEVELS.join(', ')}`), 'info'),
      // Default: pretty on a terminal, json otherwise (decided at start, see main.ts).
      format: v.optional(v.picklist(LOG_FORMATS, `must be one of ${LOG_FORMATS.join(', ')}`)),
    }),
    {},
  ),
});
