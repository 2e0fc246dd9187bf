import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const HERE = fileURLToPath(new URL('.', import.meta.url));
const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';

/** Why the HA tests cannot run here, or null when pgbouncer, haproxy and initdb are all installed. */
export function haSkipReason(): string | null {
  const onPath = (name: string) => (process.env.PATH ?? '').split(':').some((d) => existsSync(join(d, name))) || existsSync(join('/usr/sbin', name));
  const missing = [...(onPath('pgbouncer') ? [] : ['pgbouncer']), ...(onPath('haproxy') ? [] : ['haproxy']), ...(existsSync(join(PG_BIN, 'initdb')) ? [] : [`${PG_BIN}/initdb`])];
  return missing.length === 0 ? null : `not installed: ${missing.join(', ')} (apt-get install pgbouncer haproxy postgresql)`;
}

/**
 * Loopback ports per vitest worker, below the ephemeral range (32768-60999): a client that keeps
 * reconnecting to a dead port inside it can be handed that port as its own source port and
 * connect to itself.
 */
export function haPorts(): { primary: number; standby: number; pgbouncer: number; haproxy: number; http: [number, number] } {
  const base = 21_000 + Number(process.env.VITEST_POOL_ID ?? '1') * 20;
  return { primary: base, standby: base + 1, pgbouncer: base + 2, haproxy: base + 3, http: [base + 4, base + 5] };
}

/** A primary with a synchronous streaming standby, PgBouncer (transaction mode) in front of the primary; scripts in this folder. */
export class HaCluster {
  readonly ports = haPorts();
  private readonly pgDir = mkdtempSync(join(tmpdir(), 'tds-ha-pg-'));
  private readonly pgbDir = mkdtempSync(join(tmpdir(), 'tds-ha-pgb-'));
  private readonly env = {
    ...process.env,
    HA_PG_DIR: this.pgDir,
    PRIMARY_PORT: String(this.ports.primary),
    STANDBY_PORT: String(this.ports.standby),
    SYNC: 'on',
    PG_BIN,
    PGB_DIR: this.pgbDir,
    PGB_PORT: String(this.ports.pgbouncer),
    PGB_TARGET_PORT: String(this.ports.primary),
  };

  async script(name: 'primary-standby.sh' | 'pgbouncer.sh', ...args: string[]): Promise<string> {
    const { stdout } = await run(join(HERE, name), args, { env: this.env, timeout: 120_000 });
    return stdout;
  }

  /** `postgres://` to the primary directly, the standby, PgBouncer, or both hosts (read-write). */
  url(to: 'primary' | 'standby' | 'pgbouncer' | 'both'): string {
    const p = this.ports;
    if (to === 'both') return `postgres://postgres@127.0.0.1:${p.primary},127.0.0.1:${p.standby}/postgres?target_session_attrs=read-write`;
    return `postgres://postgres@127.0.0.1:${to === 'primary' ? p.primary : to === 'standby' ? p.standby : p.pgbouncer}/postgres`;
  }

  async start(): Promise<void> {
    await this.script('primary-standby.sh', 'start');
    await this.script('pgbouncer.sh', 'start');
  }

  async stop(): Promise<void> {
    await this.script('pgbouncer.sh', 'stop').catch(() => '');
    await this.script('primary-standby.sh', 'reset').catch(() => '');
    rmSync(this.pgDir, { recursive: true, force: true });
    rmSync(this.pgbDir, { recursive: true, force: true });
  }
}
