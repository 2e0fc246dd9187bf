import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as v from 'valibot';
import { existsSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, ConfigFileSchema, ENV_VARS, loadConfig, parseConfig } from '../src/config/config.ts';

const dir = mkdtempSync(join(tmpdir(), 'tds-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function writeConfig(name: string, yaml: string): string {
  const file = join(dir, name);
  writeFileSync(file, yaml);
  return file;
}

/** The ConfigError a call throws (fails the test if it throws nothing or something else). */
function configErrorOf(f: () => unknown): ConfigError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError, got a config');
}

describe('defaults', () => {
  it('has the documented defaults with no file and no environment', () => {
    const c = loadConfig({});
    expect(c.serverName).toBe('localhost:8008');
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 8008 });
    expect(c.database).toEqual({ kind: 'pglite', dataDir: './data/pglite', fsync: true, sharedBuffersMb: 128 });
    expect(c.registrationEnabled).toBe(true);
    expect(c.limits.syncToDeviceLimit).toBe(100);
    expect(c.handlers).toEqual([{ module: 'ping' }, { module: 'mls' }, { module: 'franking' }]);
    expect(parseConfig({})).toEqual(c);
  });

  it('opens registration by default only when listening on loopback', () => {
    for (const host of ['127.0.0.1', '127.0.0.53', 'localhost', '::1']) {
      expect(parseConfig({ listen: { host } }).registrationEnabled, host).toBe(true);
    }
    for (const host of ['0.0.0.0', '::', '192.168.1.10', 'example.org']) {
      expect(parseConfig({ listen: { host } }).registrationEnabled, host).toBe(false);
    }
    expect(parseConfig({ listen: { host: '0.0.0.0' }, registration: { enabled: true } }).registrationEnabled).toBe(true);
    expect(parseConfig({ listen: { host: '127.0.0.1' }, registration: { enabled: false } }).registrationEnabled).toBe(false);
  });
});

describe('environment variables', () => {
  it('override the defaults', () => {
    const c = loadConfig({ SERVER_NAME: 'example.org', LISTEN_PORT: '9000', DATABASE_URL: 'postgres://u:p@db:5432/x' });
    expect(c.serverName).toBe('example.org');
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 9000 });
    expect(c.database).toEqual({ kind: 'postgres', url: 'postgres://u:p@db:5432/x', listenUrl: 'postgres://u:p@db:5432/x', poolSize: 10, preparedStatements: true, waitTimeoutMs: 5000 });
    expect(loadConfig({ DATABASE_URL: 'postgresql://db/x', DATABASE_POOL_SIZE: '3' }).database).toEqual({
      kind: 'postgres',
      url: 'postgresql://db/x',
      listenUrl: 'postgresql://db/x',
      poolSize: 3,
      preparedStatements: true,
      waitTimeoutMs: 5000,
    });
  });

  it('ENABLE_REGISTRATION turns registration on or off whatever the host', () => {
    expect(loadConfig({ LISTEN_HOST: '0.0.0.0' }).registrationEnabled).toBe(false);
    for (const on of ['true', 'TRUE', 'yes', 'on', '1']) {
      expect(loadConfig({ LISTEN_HOST: '0.0.0.0', ENABLE_REGISTRATION: on }).registrationEnabled, on).toBe(true);
    }
    for (const off of ['false', 'no', 'off', '0']) {
      expect(loadConfig({ ENABLE_REGISTRATION: off }).registrationEnabled, off).toBe(false);
    }
    expect(configErrorOf(() => loadConfig({ ENABLE_REGISTRATION: 'maybe' })).problems).toEqual([expect.stringMatching(/^registration\.enabled .*ENABLE_REGISTRATION/)]);
  });

  it('keeps string settings that look like numbers as strings, and reads decimal numbers', () => {
    expect(loadConfig({ DATA_DIR: '2024' }).database).toEqual({ kind: 'pglite', dataDir: '2024', fsync: true, sharedBuffersMb: 128 });
    expect(loadConfig({ SERVER_NAME: '1234' }).serverName).toBe('1234');
    expect(loadConfig({ RATE_LIMIT_SEND_TO_DEVICE_PER_SECOND: '0.5' }).rateLimits.sendToDevice.perSecond).toBe(0.5);
  });

  it('ignores empty variables', () => {
    expect(loadConfig({ SERVER_NAME: '', LISTEN_PORT: '', DATABASE_URL: '', CONFIG_FILE: '' })).toEqual(parseConfig({}));
  });

  it('each documented variable lands where it says', () => {
    // A value of the right type for each, chosen to differ from the default.
    const values: Record<keyof typeof ENV_VARS, string> = {
      SERVER_NAME: 'env.example',
      LISTEN_HOST: '0.0.0.0',
      LISTEN_PORT: '1234',
      DATABASE_URL: 'postgres://h/db',
      DATA_DIR: '/tmp/x',
      PGLITE_FSYNC: 'false',
      PGLITE_SHARED_BUFFERS_MB: '16',
      DATABASE_POOL_SIZE: '7',
      DATABASE_PREPARED_STATEMENTS: 'false',
      DATABASE_LISTEN_URL: 'postgres://direct/db',
      DATABASE_WAIT_TIMEOUT_MS: '700',
      ENABLE_REGISTRATION: 'true',
      SYNC_TO_DEVICE_LIMIT: '7',
      MAX_REQUEST_BYTES: '2048',
      MAX_SYNC_TIMEOUT_MS: '7',
      TXN_RETENTION_HOURS: '48',
      DEVICE_QUEUE_MAX: '7',
      TO_DEVICE_TTL_HOURS: '7',
      MAINTENANCE_INTERVAL_S: '7',
      RATE_LIMIT_SEND_TO_DEVICE_PER_SECOND: '7',
      RATE_LIMIT_SEND_TO_DEVICE_BURST: '7',
      RATE_LIMIT_KEYS_CLAIM_PER_SECOND: '7',
      RATE_LIMIT_KEYS_CLAIM_BURST: '7',
      SERVER_USER_DISPATCH_DEADLINE_MS: '7',
      SERVER_USER_SETUP_DEADLINE_MS: '7',
      SERVER_USER_STOP_DEADLINE_MS: '7',
      FEDERATION_ENABLED: 'false',
      FEDERATION_LISTEN_HOST: '127.0.0.2',
      FEDERATION_LISTEN_PORT: '8448',
      FEDERATION_TLS_CERT: '/c.pem',
      FEDERATION_TLS_KEY: '/k.pem',
      FEDERATION_CA_FILE: '/ca.pem',
      FEDERATION_ALLOW_HTTP: 'true',
      FEDERATION_BACKOFF_INITIAL_MS: '7',
      FEDERATION_BACKOFF_MAX_MS: '70',
      FEDERATION_INBOUND_DEDUPE_DAYS: '30',
      FEDERATION_MAX_CONCURRENT_DESTINATIONS: '7',
      FEDERATION_DESTINATION_QUEUE_MAX: '7',
      FEDERATION_REMOTE_DEVICE_LIST_POLL_S: '7',
      METRICS_ENABLED: 'false',
      METRICS_HOST: '0.0.0.0',
      METRICS_PORT: '9999',
      LOG_LEVEL: 'debug',
      LOG_FORMAT: 'pretty',
    };
    const c = loadConfig(values);
    expect(c.serverName).toBe('env.example');
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 1234 });
    expect(c.database).toEqual({ kind: 'postgres', url: 'postgres://h/db', listenUrl: 'postgres://direct/db', poolSize: 7, preparedStatements: false, waitTimeoutMs: 700 });
    expect(c.registrationEnabled).toBe(true);
    expect(c.limits).toEqual({ syncToDeviceLimit: 7, maxRequestBytes: 2048, maxSyncTimeoutMs: 7, txnRetentionHours: 48, deviceQueueMax: 7, toDeviceTtlHours: 7, maintenanceIntervalS: 7 });
    expect(c.rateLimits.sendToDevice).toEqual({ perSecond: 7, burstCount: 7 });
    expect(c.rateLimits.keysClaim).toEqual({ perSecond: 7, burstCount: 7 });
    expect(c.serverUser).toEqual({ dispatchDeadlineMs: 7, setupDeadlineMs: 7, stopDeadlineMs: 7 });
    expect(c.federation).toMatchObject({
      enabled: false,
      listen: { host: '127.0.0.2', port: 8448, tlsCert: '/c.pem', tlsKey: '/k.pem' },
      caFile: '/ca.pem',
      allowHttp: true,
      backoff: { initialMs: 7, maxMs: 70 },
      inboundDedupeDays: 30,
      maxConcurrentDestinations: 7,
      destinationQueueMax: 7,
      remoteDeviceListPollS: 7,
    });
    expect(c.metrics).toEqual({ enabled: false, host: '0.0.0.0', port: 9999 });
    expect(c.log).toEqual({ level: 'debug', format: 'pretty' });
    expect(loadConfig({ DATA_DIR: '/tmp/x' }).database).toEqual({ kind: 'pglite', dataDir: '/tmp/x', fsync: true, sharedBuffersMb: 128 });
    expect(loadConfig({ DATA_DIR: '/tmp/x', PGLITE_FSYNC: 'false', PGLITE_SHARED_BUFFERS_MB: '16' }).database).toEqual({ kind: 'pglite', dataDir: '/tmp/x', fsync: false, sharedBuffersMb: 16 });
  });
});

describe('YAML file (CONFIG_FILE)', () => {
  const file = writeConfig(
    'config.yaml',
    ['server_name: file.example', 'listen:', '  host: 0.0.0.0', '  port: 9000', 'limits:', '  sync_to_device_limit: 50', 'database:', '  data_dir: /var/lib/tds', ''].join('\n'),
  );

  it('is read', () => {
    const c = loadConfig({ CONFIG_FILE: file });
    expect(c.serverName).toBe('file.example');
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 9000 });
    expect(c.limits.syncToDeviceLimit).toBe(50);
    expect(c.database).toEqual({ kind: 'pglite', dataDir: '/var/lib/tds', fsync: true, sharedBuffersMb: 128 });
    expect(c.registrationEnabled).toBe(false);
  });

  it('is overridden by environment variables, setting by setting', () => {
    const c = loadConfig({ CONFIG_FILE: file, SERVER_NAME: 'env.example', LISTEN_PORT: '9100', DATABASE_URL: 'postgres://u@db:5432/x', ENABLE_REGISTRATION: 'true' });
    expect(c.serverName).toBe('env.example');
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 9100 });
    expect(c.limits.syncToDeviceLimit).toBe(50);
    expect(c.database).toEqual({ kind: 'postgres', url: 'postgres://u@db:5432/x', listenUrl: 'postgres://u@db:5432/x', poolSize: 10, preparedStatements: true, waitTimeoutMs: 5000 });
    expect(c.registrationEnabled).toBe(true);
  });

  it('an empty file means the defaults', () => {
    expect(loadConfig({ CONFIG_FILE: writeConfig('empty.yaml', '') })).toEqual(parseConfig({}));
  });

  it('reports a missing file, broken YAML and a non-mapping as ConfigError', () => {
    expect(configErrorOf(() => loadConfig({ CONFIG_FILE: join(dir, 'missing.yaml') })).problems).toEqual([expect.stringContaining('cannot be read')]);
    expect(configErrorOf(() => loadConfig({ CONFIG_FILE: writeConfig('broken.yaml', 'listen: [unclosed\n') })).problems).toEqual([expect.stringContaining('not valid YAML')]);
    expect(configErrorOf(() => loadConfig({ CONFIG_FILE: writeConfig('list.yaml', '- a\n- b\n') })).problems).toEqual([expect.stringContaining('must be a YAML mapping')]);
  });
});

describe('validation', () => {
  it('lists every problem of a bad configuration at once', () => {
    const error = configErrorOf(() =>
      parseConfig({ server_name: 'bad name!', listen: { port: 70000 }, database: { url: 'mysql://x' }, nonsense: 1 }),
    );
    expect(error.problems).toHaveLength(4);
    expect(error.problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^server_name: /),
        expect.stringMatching(/^listen\.port: /),
        expect.stringMatching(/^database\.url: /),
        expect.stringMatching(/^nonsense: unknown setting/),
      ]),
    );
    // The message carries every problem too, one per line.
    for (const p of error.problems) expect(error.message).toContain(p);
  });

  it('lists problems from the file and the environment together, naming the variable', () => {
    const file = writeConfig('bad.yaml', 'server_name: "bad name!"\nlimits:\n  sync_to_device_limit: 0\n  bogus: true\n');
    const error = configErrorOf(() => loadConfig({ CONFIG_FILE: file, LISTEN_PORT: 'abc', DATABASE_URL: 'mysql://user:secret@db/x' }));
    expect(error.problems).toHaveLength(5);
    expect(error.problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^server_name: /),
        expect.stringMatching(/^limits\.sync_to_device_limit: /),
        expect.stringMatching(/^limits\.bogus: unknown setting/),
        expect.stringMatching(/^listen\.port \(from LISTEN_PORT="abc"\): /),
        expect.stringMatching(/^database\.url \(from DATABASE_URL\): /),
      ]),
    );
    // A database URL may hold a password: it is not echoed.
    expect(error.message).not.toContain('secret');
  });

  it.each([
    [{ listen: { port: -1 } }, 'listen.port'],
    [{ listen: { port: 80.5 } }, 'listen.port'],
    [{ listen: { port: '80' } }, 'listen.port'],
    [{ registration: { enabled: 'yes' } }, 'registration.enabled'],
    [{ database: { pool_size: 0 } }, 'database.pool_size'],
    [{ server_name: '' }, 'server_name'],
    [{ server_name: 'example.org:port' }, 'server_name'],
    [{ handlers: [{ module: '' }] }, 'handlers.0.module'],
    [{ federation: { listen: { port: 8448, tls_cert: '/c.pem' } } }, 'federation.listen'],
  ])('refuses %j', (raw, path) => {
    const error = configErrorOf(() => parseConfig(raw));
    expect(error.problems).toEqual([expect.stringMatching(new RegExp(`^${path.replace(/\./g, '\\.')}[: ]`))]);
  });

  it('words every refusal itself, never in the validator\'s terms, and gives the range of a number', () => {
    const rawWording = /Invalid|Expected|received/;
    for (const { path, default: fallback } of settingsOf(ConfigFileSchema)) {
      const raw: Record<string, unknown> = {};
      const wrong = (value: unknown) => {
        const keys = path.split('.');
        let node = raw;
        for (const key of keys.slice(0, -1)) node = (node[key] ??= key === 'listen' && path.startsWith('federation.') ? { port: 8448 } : {}) as Record<string, unknown>;
        node[keys[keys.length - 1] as string] = value;
        return configErrorOf(() => parseConfig(raw)).problems;
      };
      const problems = wrong({ not: 'this' });
      expect(problems.length, path).toBeGreaterThan(0);
      for (const p of problems) {
        expect(p, path).toMatch(new RegExp(`^${path.replace(/\./g, '\\.')}[.: ]`));
        expect(p, path).not.toMatch(rawWording);
      }
      if (typeof fallback === 'number') {
        const [tooBig] = wrong(1e12);
        expect(tooBig, path).toMatch(/: must be (an integer|a port number, an integer|a number) from \d+ to \d+$/);
      }
    }
  });

  it('accepts server names with ports and IP literals', () => {
    for (const name of ['example.org', 'example.org:8448', '1.2.3.4:1234', '[1234:5678::abcd]', '[::1]:8448']) {
      expect(parseConfig({ server_name: name }).serverName).toBe(name);
    }
  });

  it('is frozen, all the way down', () => {
    const c = parseConfig({ federation: { static_routes: { 'a.example': 'http://127.0.0.1:1' } } });
    expect(Object.isFrozen(c)).toBe(true);
    expect(() => {
      (c as { serverName: string }).serverName = 'evil.example';
    }).toThrow(TypeError);
    expect(() => {
      (c.limits as { syncToDeviceLimit: number }).syncToDeviceLimit = 1;
    }).toThrow(TypeError);
    expect(() => {
      (c.handlers as { module: string }[]).push({ module: 'evil' });
    }).toThrow(TypeError);
    expect(() => {
      (c.federation.staticRoutes as Record<string, string>)['b.example'] = 'http://evil';
    }).toThrow(TypeError);
    expect(c.serverName).toBe('localhost:8008');
    expect(c.limits.syncToDeviceLimit).toBe(100);
    expect(c.handlers).toEqual([{ module: 'ping' }, { module: 'mls' }, { module: 'franking' }]);
  });
});

describe('the server process', () => {
  const ROOT = fileURLToPath(new URL('..', import.meta.url));
  const start = (env: NodeJS.ProcessEnv) => {
    const clean: NodeJS.ProcessEnv = { ...process.env, ...env };
    // Nothing from the outer environment may mask or add problems.
    for (const name of [...Object.keys(ENV_VARS), 'CONFIG_FILE']) if (!(name in env)) delete clean[name];
    return spawnSync(process.execPath, ['--conditions=matrix-to-device-source', '--import', 'tsx', 'src/main.ts'], { cwd: ROOT, env: clean, encoding: 'utf8', timeout: 30_000 });
  };

  it('exits with code 1 and one clear message on a bad environment', () => {
    const r = start({ LISTEN_PORT: 'abc' });
    expect(r.error).toBeUndefined();
    expect(r.signal).toBeNull();
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
    expect(lines).toEqual(['Cannot start: 1 problem', '  - config: listen.port (from LISTEN_PORT="abc"): must be a port number, an integer from 0 to 65535']);
  });

  it('names the variable and the allowed range of a value out of range', () => {
    const r = start({ LISTEN_PORT: '99999' });
    expect(r.status).toBe(1);
    expect(r.stderr.split('\n').filter((l) => l.trim() !== '')).toEqual([
      'Cannot start: 1 problem',
      '  - config: listen.port (from LISTEN_PORT="99999"): must be a port number, an integer from 0 to 65535',
    ]);
  });

  it('reports every config and handler-module problem in one run, before creating anything on disk', () => {
    const dataDir = join(dir, 'never-created', 'pglite');
    const file = writeConfig(
      'many-problems.yaml',
      [
        'listen: { port: 70000 }',
        'limts: { sync_to_device_limit: 5 }',
        `database: { data_dir: ${JSON.stringify(dataDir)} }`,
        'handlers:',
        '  - module: no-such-module',
        '  - module: ./nowhere/module.js',
        '  - module: ping',
        '    config: { verbose: true }',
        '  - module: mls',
        '    config: { ciphersuites: [NOT_A_SUITE], max_key_packages: 5 }',
        '  - module: franking',
        '    config: { moderators: [not-a-user-id] }',
      ].join('\n'),
    );
    const r = start({ CONFIG_FILE: file, LISTEN_PORT: '' });
    expect(r.status).toBe(1);
    const problems = r.stderr.split('\n').filter((l) => l.startsWith('  - ')).map((l) => l.slice(4));
    expect(problems).toEqual([
      'config: listen.port: must be a port number, an integer from 0 to 65535',
      'config: limts: unknown setting',
      expect.stringMatching(/^TDS_ERR_MODULE_NOT_FOUND: handler module "no-such-module" not found: no folder .*handlers\/no-such-module, and no package "no-such-module" in node_modules of /),
      expect.stringMatching(/^TDS_ERR_MODULE_NOT_FOUND: handler module "\.\/nowhere\/module\.js" not found: nothing at .*\/nowhere\/module\.js$/),
      'TDS_ERR_CONFIG_UNEXPECTED: handler module "ping" takes no config, but the server config gives it one',
      expect.stringMatching(/^TDS_ERR_CONFIG_INVALID: handler module "mls" config\.ciphersuites\.0: /),
      'TDS_ERR_CONFIG_UNKNOWN_KEY: handler module "mls" config.max_key_packages: unknown setting',
      'TDS_ERR_CONFIG_INVALID: handler module "franking" config.moderators.0: not a user ID',
    ]);
    expect(r.stderr).toMatch(/^Cannot start: 8 problems\n/);
    expect(existsSync(join(dir, 'never-created'))).toBe(false);
  });
});

/** Every setting of the YAML file: dotted path and default (undefined when it has none). */
function settingsOf(schema: v.GenericSchema, prefix = ''): { path: string; default: unknown }[] {
  let inner: v.GenericSchema = schema;
  let fallback: unknown = undefined;
  if (inner.type === 'optional') {
    fallback = v.getDefault(inner as v.OptionalSchema<v.GenericSchema, unknown>);
    inner = (inner as v.OptionalSchema<v.GenericSchema, unknown>).wrapped;
  }
  if (inner.type === 'strict_object') {
    const entries = (inner as v.StrictObjectSchema<v.ObjectEntries, undefined>).entries;
    return Object.entries(entries).flatMap(([key, child]) => settingsOf(child as v.GenericSchema, prefix === '' ? key : `${prefix}.${key}`));
  }
  return [{ path: prefix, default: fallback }];
}

/** The rows of the configuration table in docs/configuration.md: YAML key, variable (null for —), default cell. */
function referenceRows(): { key: string; env: string | null; defaultCell: string }[] {
  const reference = readFileSync(fileURLToPath(new URL('../docs/configuration.md', import.meta.url)), 'utf8');
  return reference
    .split('\n')
    .filter((line) => line.startsWith('| `'))
    .map((line) => {
      const [key, env, defaultCell] = line.split('|').slice(1, 4).map((c) => c.trim()) as [string, string, string];
      expect(key, line).toMatch(/^`[a-z_.]+`$/);
      expect(env, line).toMatch(/^(`[A-Z_]+`|—)$/);
      return { key: key.slice(1, -1), env: env === '—' ? null : env.slice(1, -1), defaultCell };
    });
}

describe('the configuration reference (docs/configuration.md)', () => {
  const settings = settingsOf(ConfigFileSchema);

  it('has one row for every setting, and none for a setting that does not exist', () => {
    const rows = referenceRows();
    expect(rows.map((r) => r.key).sort()).toEqual(settings.map((s) => s.path).sort());
  });

  it('names the environment variable of each setting, and only variables that are read', () => {
    const rows = referenceRows();
    const byPath = new Map(Object.entries(ENV_VARS).map(([name, { path }]) => [path.join('.'), name]));
    for (const row of rows) expect(row.env, row.key).toBe(byPath.get(row.key) ?? null);
  });

  it('gives the default of each setting that has a plain one', () => {
    const rows = referenceRows();
    for (const { path, default: value } of settings) {
      const row = rows.find((r) => r.key === path);
      if (value === undefined || (typeof value === 'object' && Object.keys(value as object).length > 0)) continue;
      const shown = typeof value === 'object' ? JSON.stringify(value) : String(value);
      expect(row?.defaultCell.startsWith(`\`${shown}\``), `${path}: docs/configuration.md says ${row?.defaultCell}, the schema ${shown}`).toBe(true);
    }
  });
});
