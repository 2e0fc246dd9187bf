import { readFileSync } from 'node:fs';
import * as v from 'valibot';
import { parse as parseYaml } from 'yaml';
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../logger.ts';
import { isValidServerName } from '../shared/user-id.ts';

/**
 * Server configuration: defaults, then an optional YAML file, then environment variables.
 * Validated once at start and frozen; a bad config is reported with every problem at once.
 */

const intInRange = (min: number, max: number) =>
  v.pipe(v.number('must be a number'), v.integer('must be an integer'), v.minValue(min), v.maxValue(max));

/** The YAML file's shape, with each setting's default (exported for the docs/configuration.md check). */
export const ConfigFileSchema = v.strictObject({
  server_name: v.optional(
    v.pipe(v.string(), v.check(isValidServerName, 'must be a valid Matrix server name (host[:port])')),
    'localhost:8008',
  ),
  listen: v.optional(
    v.strictObject({
      host: v.optional(v.pipe(v.string(), v.minLength(1)), '127.0.0.1'),
      port: v.optional(intInRange(0, 65535), 8008),
    }),
    {},
  ),
  database: v.optional(
    v.strictObject({
      // A PostgreSQL URL; when absent the embedded PGlite database in data_dir is used.
      url: v.optional(v.pipe(v.string(), v.regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL'))),
      // A direct connection (not a transaction pooler) for LISTEN and migrations' advisory lock; default: url.
      listen_url: v.optional(v.pipe(v.string(), v.regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL'))),
      // How long a request waits for a database connection before it is answered 503.
      wait_timeout_ms: v.optional(intInRange(100, 600_000), 5_000),
      data_dir: v.optional(v.pipe(v.string(), v.minLength(1)), './data/pglite'),
      // PGlite: fsync every commit, so that what was acknowledged survives an OS crash (see pglite-durable.ts).
      pglite_fsync: v.optional(v.boolean('must be true or false'), true),
      pool_size: v.optional(intInRange(1, 1000), 10),
      // Off for poolers that cannot keep a session's prepared statements (PgBouncer before 1.21 in transaction mode).
      prepared_statements: v.optional(v.boolean('must be true or false'), true),
    }),
    {},
  ),
  registration: v.optional(
    v.strictObject({
      // Default: open only when listening on loopback (decided after parsing).
      enabled: v.optional(v.boolean('must be true or false')),
    }),
    {},
  ),
  limits: v.optional(
    v.strictObject({
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
      v.strictObject({
        module: v.pipe(v.string(), v.minLength(1)),
        config: v.optional(v.unknown()),
      }),
    ),
    [{ module: 'ping' }, { module: 'mls' }, { module: 'franking' }],
  ),
  federation: v.optional(
    v.strictObject({
      enabled: v.optional(v.boolean(), true),
      // A second listener for federation, e.g. TLS on 8448 (it serves the whole API).
      listen: v.optional(
        v.strictObject({
          host: v.optional(v.pipe(v.string(), v.minLength(1)), '0.0.0.0'),
          port: intInRange(0, 65535),
          tls_cert: v.optional(v.pipe(v.string(), v.minLength(1))),
          tls_key: v.optional(v.pipe(v.string(), v.minLength(1))),
        }),
      ),
      // PEM file of extra CAs to trust when dialling other servers (e.g. a test Synapse's).
      ca_file: v.optional(v.pipe(v.string(), v.minLength(1))),
      // Test/development only: dial other servers over plain HTTP.
      allow_http: v.optional(v.boolean(), false),
      // Test/development only: server name → base URL, bypassing server discovery.
      static_routes: v.optional(v.record(v.string(), v.pipe(v.string(), v.url('must be a URL'))), {}),
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
    v.strictObject({
      // Per (user, device); per_second 0 turns the limit off. Appservices with
      // `rate_limited: false` in their registration are exempt.
      send_to_device: v.optional(
        v.strictObject({
          per_second: v.optional(v.pipe(v.number(), v.minValue(0), v.maxValue(1_000_000)), 100),
          burst_count: v.optional(intInRange(1, 1_000_000), 500),
        }),
        {},
      ),
      // Per user: each claim uses up another user's one-time keys, so a client that claims in a
      // loop would drain them all. per_second 0 turns the limit off.
      keys_claim: v.optional(
        v.strictObject({
          per_second: v.optional(v.pipe(v.number(), v.minValue(0), v.maxValue(1_000_000)), 10),
          burst_count: v.optional(intInRange(1, 1_000_000), 100),
        }),
        {},
      ),
    }),
    {},
  ),
  // Paths of appservice registration files (YAML).
  appservices: v.optional(v.array(v.pipe(v.string(), v.minLength(1))), []),
  server_user: v.optional(
    v.strictObject({
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
    v.strictObject({
      enabled: v.optional(v.boolean('must be true or false'), true),
      host: v.optional(v.pipe(v.string(), v.minLength(1)), '127.0.0.1'),
      port: v.optional(intInRange(0, 65535), 9464),
    }),
    {},
  ),
  log: v.optional(
    v.strictObject({
      level: v.optional(v.picklist(LOG_LEVELS, `must be one of ${LOG_LEVELS.join(', ')}`), 'info'),
      // Default: pretty on a terminal, json otherwise (decided at start, see main.ts).
      format: v.optional(v.picklist(LOG_FORMATS, `must be one of ${LOG_FORMATS.join(', ')}`)),
    }),
    {},
  ),
});

export type ConfigFile = v.InferOutput<typeof ConfigFileSchema>;

export interface Config {
  readonly serverName: string;
  readonly listen: { readonly host: string; readonly port: number };
  readonly database:
    | {
        readonly kind: 'postgres';
        readonly url: string;
        readonly listenUrl: string;
        readonly poolSize: number;
        readonly preparedStatements: boolean;
        readonly waitTimeoutMs: number;
      }
    | { readonly kind: 'pglite'; readonly dataDir: string | null; readonly fsync: boolean };
  readonly registrationEnabled: boolean;
  readonly limits: {
    readonly syncToDeviceLimit: number;
    readonly maxRequestBytes: number;
    readonly maxSyncTimeoutMs: number;
    readonly txnRetentionHours: number;
    readonly deviceQueueMax: number;
    readonly toDeviceTtlHours: number;
    readonly maintenanceIntervalS: number;
  };
  readonly rateLimits: {
    readonly sendToDevice: { readonly perSecond: number; readonly burstCount: number };
    readonly keysClaim: { readonly perSecond: number; readonly burstCount: number };
  };
  /** Handler modules to load and each one's raw config, validated by the module at start. */
  readonly handlers: readonly { readonly module: string; readonly config?: unknown }[];
  readonly serverUser: { readonly dispatchDeadlineMs: number; readonly setupDeadlineMs: number; readonly stopDeadlineMs: number };
  readonly appservices: readonly string[];
  readonly federation: {
    readonly enabled: boolean;
    readonly listen: { readonly host: string; readonly port: number; readonly tlsCert: string | null; readonly tlsKey: string | null } | null;
    readonly caFile: string | null;
    readonly allowHttp: boolean;
    readonly staticRoutes: Readonly<Record<string, string>>;
    readonly backoff: { readonly initialMs: number; readonly maxMs: number };
    readonly inboundDedupeDays: number;
    readonly maxConcurrentDestinations: number;
    readonly destinationQueueMax: number;
    readonly remoteDeviceListPollS: number;
  };
  readonly metrics: { readonly enabled: boolean; readonly host: string; readonly port: number };
  /** `format` null: chosen by whether stderr is a terminal. */
  readonly log: { readonly level: LogLevel; readonly format: LogFormat | null };
}

export class ConfigError extends Error {
  /**
   * @param handlers the handler modules the config names, when that part of it is valid: the
   *   start-up check loads them anyway, so one run reports module problems too.
   */
  constructor(
    readonly problems: string[],
    readonly handlers?: Config['handlers'],
  ) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

type EnvKind = 'string' | 'number' | 'boolean';

/**
 * Every environment variable, where it lands in the config file's shape, and the type it holds.
 * One table for all of them: the configuration reference, docs/configuration.md, is checked against it
 * (test/config.test.ts), so a variable cannot exist undocumented. Lists and maps (handlers,
 * appservices, federation.static_routes) are set in the YAML file only.
 */
export const ENV_VARS = {
  SERVER_NAME: { path: ['server_name'], kind: 'string' },
  LISTEN_HOST: { path: ['listen', 'host'], kind: 'string' },
  LISTEN_PORT: { path: ['listen', 'port'], kind: 'number' },
  DATABASE_URL: { path: ['database', 'url'], kind: 'string' },
  DATA_DIR: { path: ['database', 'data_dir'], kind: 'string' },
  PGLITE_FSYNC: { path: ['database', 'pglite_fsync'], kind: 'boolean' },
  DATABASE_POOL_SIZE: { path: ['database', 'pool_size'], kind: 'number' },
  DATABASE_PREPARED_STATEMENTS: { path: ['database', 'prepared_statements'], kind: 'boolean' },
  DATABASE_LISTEN_URL: { path: ['database', 'listen_url'], kind: 'string' },
  DATABASE_WAIT_TIMEOUT_MS: { path: ['database', 'wait_timeout_ms'], kind: 'number' },
  ENABLE_REGISTRATION: { path: ['registration', 'enabled'], kind: 'boolean' },
  SYNC_TO_DEVICE_LIMIT: { path: ['limits', 'sync_to_device_limit'], kind: 'number' },
  MAX_REQUEST_BYTES: { path: ['limits', 'max_request_bytes'], kind: 'number' },
  MAX_SYNC_TIMEOUT_MS: { path: ['limits', 'max_sync_timeout_ms'], kind: 'number' },
  TXN_RETENTION_HOURS: { path: ['limits', 'txn_retention_hours'], kind: 'number' },
  DEVICE_QUEUE_MAX: { path: ['limits', 'device_queue_max'], kind: 'number' },
  TO_DEVICE_TTL_HOURS: { path: ['limits', 'to_device_ttl_hours'], kind: 'number' },
  MAINTENANCE_INTERVAL_S: { path: ['limits', 'maintenance_interval_s'], kind: 'number' },
  RATE_LIMIT_SEND_TO_DEVICE_PER_SECOND: { path: ['rate_limits', 'send_to_device', 'per_second'], kind: 'number' },
  RATE_LIMIT_SEND_TO_DEVICE_BURST: { path: ['rate_limits', 'send_to_device', 'burst_count'], kind: 'number' },
  RATE_LIMIT_KEYS_CLAIM_PER_SECOND: { path: ['rate_limits', 'keys_claim', 'per_second'], kind: 'number' },
  RATE_LIMIT_KEYS_CLAIM_BURST: { path: ['rate_limits', 'keys_claim', 'burst_count'], kind: 'number' },
  SERVER_USER_DISPATCH_DEADLINE_MS: { path: ['server_user', 'dispatch_deadline_ms'], kind: 'number' },
  SERVER_USER_SETUP_DEADLINE_MS: { path: ['server_user', 'setup_deadline_ms'], kind: 'number' },
  SERVER_USER_STOP_DEADLINE_MS: { path: ['server_user', 'stop_deadline_ms'], kind: 'number' },
  FEDERATION_ENABLED: { path: ['federation', 'enabled'], kind: 'boolean' },
  FEDERATION_LISTEN_HOST: { path: ['federation', 'listen', 'host'], kind: 'string' },
  FEDERATION_LISTEN_PORT: { path: ['federation', 'listen', 'port'], kind: 'number' },
  FEDERATION_TLS_CERT: { path: ['federation', 'listen', 'tls_cert'], kind: 'string' },
  FEDERATION_TLS_KEY: { path: ['federation', 'listen', 'tls_key'], kind: 'string' },
  FEDERATION_CA_FILE: { path: ['federation', 'ca_file'], kind: 'string' },
  FEDERATION_ALLOW_HTTP: { path: ['federation', 'allow_http'], kind: 'boolean' },
  FEDERATION_BACKOFF_INITIAL_MS: { path: ['federation', 'backoff_initial_ms'], kind: 'number' },
  FEDERATION_BACKOFF_MAX_MS: { path: ['federation', 'backoff_max_ms'], kind: 'number' },
  FEDERATION_INBOUND_DEDUPE_DAYS: { path: ['federation', 'inbound_dedupe_days'], kind: 'number' },
  FEDERATION_MAX_CONCURRENT_DESTINATIONS: { path: ['federation', 'max_concurrent_destinations'], kind: 'number' },
  FEDERATION_DESTINATION_QUEUE_MAX: { path: ['federation', 'destination_queue_max'], kind: 'number' },
  FEDERATION_REMOTE_DEVICE_LIST_POLL_S: { path: ['federation', 'remote_device_list_poll_s'], kind: 'number' },
  METRICS_ENABLED: { path: ['metrics', 'enabled'], kind: 'boolean' },
  METRICS_HOST: { path: ['metrics', 'host'], kind: 'string' },
  METRICS_PORT: { path: ['metrics', 'port'], kind: 'number' },
  LOG_LEVEL: { path: ['log', 'level'], kind: 'string' },
  LOG_FORMAT: { path: ['log', 'format'], kind: 'string' },
} as const satisfies Record<string, { path: readonly string[]; kind: EnvKind }>;

/**
 * Converts by the target's type, so a string setting that looks like a number (DATA_DIR=2024)
 * stays a string. A value that does not convert is passed on as is and the schema reports it.
 */
function coerceEnv(raw: string, kind: EnvKind): unknown {
  const trimmed = raw.trim();
  if (kind === 'number') return /^-?\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) : raw;
  if (kind === 'boolean') {
    if (/^(true|yes|on|1)$/i.test(trimmed)) return true;
    if (/^(false|no|off|0)$/i.test(trimmed)) return false;
  }
  return raw;
}

function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1] as string] = value;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\./.test(host);
}

function issuePath(issue: v.BaseIssue<unknown>): string {
  return issue.path?.map((p) => String(p.key)).join('.') ?? '(root)';
}

function describeIssue(issue: v.BaseIssue<unknown>): string {
  // valibot words an unknown key as "Invalid key: Expected never but received ...".
  if (issue.kind === 'schema' && issue.type === 'strict_object' && issue.expected === 'never') return `${issuePath(issue)}: unknown setting`;
  return `${issuePath(issue)}: ${issue.message}`;
}

/** Validates a config-file-shaped object (YAML or built in code) into a frozen Config. */
export function parseConfig(raw: unknown): Config {
  const parsed = v.safeParse(ConfigFileSchema, raw ?? {});
  if (!parsed.success) {
    const handlers = v.safeParse(ConfigFileSchema.entries.handlers, (raw as { handlers?: unknown } | null)?.handlers);
    throw new ConfigError(parsed.issues.map(describeIssue), handlers.success ? handlers.output : undefined);
  }
  const c = parsed.output;
  const listen = c.federation.listen;
  if (listen !== undefined && (listen.tls_cert === undefined) !== (listen.tls_key === undefined)) {
    throw new ConfigError(['federation.listen: tls_cert and tls_key must be given together'], c.handlers);
  }
  const config: Config = {
    serverName: c.server_name,
    listen: { host: c.listen.host, port: c.listen.port },
    database:
      c.database.url !== undefined
        ? {
            kind: 'postgres',
            url: c.database.url,
            listenUrl: c.database.listen_url ?? c.database.url,
            poolSize: c.database.pool_size,
            preparedStatements: c.database.prepared_statements,
            waitTimeoutMs: c.database.wait_timeout_ms,
          }
        : { kind: 'pglite', dataDir: c.database.data_dir, fsync: c.database.pglite_fsync },
    registrationEnabled: c.registration.enabled ?? isLoopback(c.listen.host),
    limits: {
      syncToDeviceLimit: c.limits.sync_to_device_limit,
      maxRequestBytes: c.limits.max_request_bytes,
      maxSyncTimeoutMs: c.limits.max_sync_timeout_ms,
      txnRetentionHours: c.limits.txn_retention_hours,
      deviceQueueMax: c.limits.device_queue_max,
      toDeviceTtlHours: c.limits.to_device_ttl_hours,
      maintenanceIntervalS: c.limits.maintenance_interval_s,
    },
    rateLimits: {
      sendToDevice: { perSecond: c.rate_limits.send_to_device.per_second, burstCount: c.rate_limits.send_to_device.burst_count },
      keysClaim: { perSecond: c.rate_limits.keys_claim.per_second, burstCount: c.rate_limits.keys_claim.burst_count },
    },
    handlers: c.handlers,
    serverUser: {
      dispatchDeadlineMs: c.server_user.dispatch_deadline_ms,
      setupDeadlineMs: c.server_user.setup_deadline_ms,
      stopDeadlineMs: c.server_user.stop_deadline_ms,
    },
    appservices: c.appservices,
    federation: {
      enabled: c.federation.enabled,
      listen:
        c.federation.listen === undefined
          ? null
          : {
              host: c.federation.listen.host,
              port: c.federation.listen.port,
              tlsCert: c.federation.listen.tls_cert ?? null,
              tlsKey: c.federation.listen.tls_key ?? null,
            },
      caFile: c.federation.ca_file ?? null,
      allowHttp: c.federation.allow_http,
      staticRoutes: c.federation.static_routes,
      backoff: { initialMs: c.federation.backoff_initial_ms, maxMs: c.federation.backoff_max_ms },
      inboundDedupeDays: c.federation.inbound_dedupe_days,
      maxConcurrentDestinations: c.federation.max_concurrent_destinations,
      destinationQueueMax: c.federation.destination_queue_max,
      remoteDeviceListPollS: c.federation.remote_device_list_poll_s,
    },
    metrics: { enabled: c.metrics.enabled, host: c.metrics.host, port: c.metrics.port },
    log: { level: c.log.level, format: c.log.format ?? null },
  };
  return deepFreeze(config);
}

/** Reads CONFIG_FILE (YAML) if set, overlays environment variables, validates. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  let raw: Record<string, unknown> = {};
  const file = env.CONFIG_FILE;
  if (file !== undefined && file !== '') {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new ConfigError([`CONFIG_FILE ${file}: cannot be read (${(e as Error).message})`]);
    }
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch (e) {
      throw new ConfigError([`CONFIG_FILE ${file}: not valid YAML (${(e as Error).message})`]);
    }
    if (doc !== null && doc !== undefined) {
      if (typeof doc !== 'object' || Array.isArray(doc)) {
        throw new ConfigError([`CONFIG_FILE ${file}: must be a YAML mapping`]);
      }
      raw = doc as Record<string, unknown>;
    }
  }
  // "listen.port" → the variable that set it, so a problem names what the operator typed.
  const fromEnv = new Map<string, string>();
  for (const [name, { path, kind }] of Object.entries(ENV_VARS)) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    setPath(raw, path, coerceEnv(value, kind));
    // The URL may carry a password: name the variable but do not echo it.
    fromEnv.set(path.join('.'), name === 'DATABASE_URL' || name === 'DATABASE_LISTEN_URL' ? name : `${name}=${JSON.stringify(value)}`);
  }
  try {
    return parseConfig(raw);
  } catch (e) {
    if (!(e instanceof ConfigError) || fromEnv.size === 0) throw e;
    throw new ConfigError(
      e.problems.map((problem) => {
        for (const [path, source] of fromEnv) {
          if (problem.startsWith(`${path}: `)) return `${path} (from ${source})${problem.slice(path.length)}`;
        }
        return problem;
      }),
      e.handlers,
    );
  }
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
