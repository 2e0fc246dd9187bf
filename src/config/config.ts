import { readFileSync } from 'node:fs';
import * as v from 'valibot';
import { parse as parseYaml } from 'yaml';
import type { LogFormat, LogLevel } from '../logger.ts';
import { coerceEnv, ENV_VARS, setPath } from './env-vars.ts';
import { ConfigFileSchema } from './schema.ts';

// Where they were first defined; the README check and tests import them from here.
export { ENV_VARS } from './env-vars.ts';
export { ConfigFileSchema } from './schema.ts';

/**
 * Server configuration: defaults, then an optional YAML file, then environment variables.
 * Validated once at start and frozen; a bad config is reported with every problem at once.
 */

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
    | { readonly kind: 'pglite'; readonly dataDir: string | null; readonly fsync: boolean; readonly sharedBuffersMb: number };
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
    // A value can fail several checks of one setting (99999.5: integer, and range) with one message.
    throw new ConfigError([...new Set(parsed.issues.map(describeIssue))], handlers.success ? handlers.output : undefined);
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
        : { kind: 'pglite', dataDir: c.database.data_dir, fsync: c.database.pglite_fsync, sharedBuffersMb: c.database.pglite_shared_buffers_mb },
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
