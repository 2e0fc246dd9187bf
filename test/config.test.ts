import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseConfig } from '../src/config/config.ts';

describe('configuration', () => {
  it('has the documented defaults', () => {
    const c = loadConfig({});
    expect(c.serverName).toBe('localhost:8008');
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 8008 });
    expect(c.database).toEqual({ kind: 'pglite', dataDir: './data/pglite' });
    expect(c.registrationEnabled).toBe(true);
    expect(c.limits.syncToDeviceLimit).toBe(100);
    expect(c.handlers).toEqual([{ module: 'ping' }]);
  });

  it('opens registration by default only on loopback', () => {
    expect(parseConfig({ listen: { host: '0.0.0.0' } }).registrationEnabled).toBe(false);
    expect(parseConfig({ listen: { host: '0.0.0.0' }, registration: { enabled: true } }).registrationEnabled).toBe(true);
  });

  it('reads a YAML file and lets environment variables override it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tds-config-'));
    const file = join(dir, 'config.yaml');
    writeFileSync(file, 'server_name: example.org\nlisten:\n  port: 9000\nlimits:\n  sync_to_device_limit: 50\n');
    const c = loadConfig({ CONFIG_FILE: file, LISTEN_PORT: '9100', DATABASE_URL: 'postgres://u@db:5432/x', ENABLE_REGISTRATION: 'false' });
    expect(c.serverName).toBe('example.org');
    expect(c.listen.port).toBe(9100);
    expect(c.limits.syncToDeviceLimit).toBe(50);
    expect(c.database).toEqual({ kind: 'postgres', url: 'postgres://u@db:5432/x', poolSize: 10 });
    expect(c.registrationEnabled).toBe(false);
  });

  it('lists every problem of a bad configuration at once', () => {
    let error: unknown;
    try {
      parseConfig({ server_name: 'bad name!', listen: { port: 70000 }, database: { url: 'mysql://x' }, nonsense: 1 });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join('\n');
    expect(problems).toMatch(/server_name/);
    expect(problems).toMatch(/listen\.port/);
    expect(problems).toMatch(/database\.url/);
    expect(problems).toMatch(/nonsense/);
  });

  it('is frozen', () => {
    const c = parseConfig({});
    expect(() => {
      (c.limits as { syncToDeviceLimit: number }).syncToDeviceLimit = 1;
    }).toThrow(TypeError);
  });

  it('makes the server exit 1 with a clear message on a bad environment', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: new URL('..', import.meta.url).pathname,
      env: { ...process.env, LISTEN_PORT: 'abc', SERVER_NAME: 'no spaces allowed', CONFIG_FILE: '' },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/Invalid configuration:/);
    expect(r.stderr).toMatch(/listen\.port/);
    expect(r.stderr).toMatch(/server_name/);
  });
});
