export type EnvKind = 'string' | 'number' | 'boolean';

/**
 * Every environment variable, where it lands in the config file's shape, and the type it holds.
 * One table for all of them: the README's configuration reference is checked against it
 * (test/config.test.ts), so a variable cannot exist undocumented. Lists and maps (handlers,
 * appservices, federation.static_routes) are set in the YAML file only.
 */
export const ENV_VARS = {
  SERVER_NAME: { path: ['server_name'], kind: 'string' },
  LISTEN_HOST: { path: ['listen', 'host'], kind: 'string' },
  LISTEN_PORT: { path: ['listen', 'port'], kind: 'number' },
  DATABASE_URL: { path: ['database', 'url'], kind: 'string' },
  DATABASE_LISTEN_URL: { path: ['database', 'listen_url'], kind: 'string' },
  DATABASE_WAIT_TIMEOUT_MS: { path: ['database', 'wait_timeout_ms'], kind: 'number' },
  DATA_DIR: { path: ['database', 'data_dir'], kind: 'string' },
  PGLITE_FSYNC: { path: ['database', 'pglite_fsync'], kind: 'boolean' },
  PGLITE_SHARED_BUFFERS_MB: { path: ['database', 'pglite_shared_buffers_mb'], kind: 'number' },
  DATABASE_POOL_SIZE: { path: ['database', 'pool_size'], kind: 'number' },
  DATABASE_PREPARED_STATEMENTS: { path: ['database', 'prepared_statements'], kind: 'boolean' },
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
export function coerceEnv(raw: string, kind: EnvKind): unknown {
  const trimmed = raw.trim();
  if (kind === 'number') return /^-?\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) : raw;
  if (kind === 'boolean') {
    if (/^(true|yes|on|1)$/i.test(trimmed)) return true;
    if (/^(false|no|off|0)$/i.test(trimmed)) return false;
  }
  return raw;
}

export function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1] as string] = value;
}
