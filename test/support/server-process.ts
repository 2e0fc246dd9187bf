import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createPostgresDatabaseUrl } from './test-database.ts';

const ROOT = new URL('../..', import.meta.url).pathname;

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A real server process (`src/main.ts`) with its own database — a PGlite directory, or a fresh
 * PostgreSQL database when TEST_DATABASE_URL is set — kept across restarts of the process.
 */
export class ServerProcess {
  private child: ChildProcess | null = null;
  private readonly dir = mkdtempSync(join(tmpdir(), 'tds-proc-'));
  private pg: { url: string; drop(): Promise<void> } | null = null;
  readonly baseUrl: string;
  stderr = '';

  private constructor(
    readonly serverName: string,
    readonly port: number,
    private readonly config: Record<string, unknown>,
  ) {
    this.baseUrl = `http://127.0.0.1:${port}`;
  }

  /** The node arguments that run the server: from source by default, or e.g. `['dist/src/main.js']` for the build. */
  entry: string[] = ['--conditions=matrix-to-device-source', '--import', 'tsx', 'src/main.ts'];
  /** The working directory (where relative module paths and npm package names are resolved from). */
  cwd: string = ROOT;

  /** `pg`: a PostgreSQL database to use (dropped by `destroy`) instead of the one TEST_DATABASE_URL would give. */
  static async create(serverName: string, port: number, config: Record<string, unknown> = {}, pg?: { url: string; drop(): Promise<void> }): Promise<ServerProcess> {
    const p = new ServerProcess(serverName, port, config);
    p.pg = pg ?? (await createPostgresDatabaseUrl());
    return p;
  }

  /**
   * A second process of the same deployment: same server name, same PostgreSQL database (which the
   * first one drops). `config`, if given, is laid over the first's (e.g. a metrics port of its own).
   */
  static sharing(first: ServerProcess, port: number, config: Record<string, unknown> = {}): ServerProcess {
    if (first.pg === null) throw new Error('processes share a database only on PostgreSQL');
    const p = new ServerProcess(first.serverName, port, { ...first.config, ...config });
    p.pg = { url: first.pg.url, drop: async () => {} };
    return p;
  }

  async start(): Promise<void> {
    const configFile = join(this.dir, 'config.yaml');
    writeFileSync(
      configFile,
      stringify({
        server_name: this.serverName,
        listen: { host: '127.0.0.1', port: this.port },
        database: this.pg === null ? { data_dir: join(this.dir, 'pglite') } : { url: this.pg.url },
        ...this.config,
      }),
    );
    const child = spawn(process.execPath, this.entry, {
      cwd: this.cwd,
      env: { ...process.env, CONFIG_FILE: configFile, LOG_LEVEL: 'info', DATABASE_URL: '' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    this.stderr = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.serverName} did not start:\n${this.stderr}`)), 60_000);
      child.stderr?.on('data', (d: Buffer) => {
        this.stderr += d.toString();
        if (this.stderr.includes('"msg":"listening"')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${this.serverName} exited with ${code}:\n${this.stderr}`));
      });
    });
  }

  /** Stops the process: SIGTERM (graceful) or SIGKILL (a crash). Resolves with its exit code. */
  async stop(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<number | null> {
    const child = this.child;
    if (child === null || child.exitCode !== null) return child?.exitCode ?? null;
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill(signal);
    const code = await exited;
    this.child = null;
    return code;
  }

  /** Sends a signal without waiting; `exited` resolves with the exit code. */
  signal(signal: NodeJS.Signals): { exited: Promise<number | null> } {
    const child = this.child;
    if (child === null) return { exited: Promise.resolve(null) };
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill(signal);
    void exited.then(() => {
      if (this.child === child) this.child = null;
    });
    return { exited };
  }

  /** The PGlite data directory when not on PostgreSQL (open it only while the process is stopped). */
  get pgliteDir(): string | null {
    return this.pg === null ? join(this.dir, 'pglite') : null;
  }

  /** The database URL when on PostgreSQL (for fault injection). */
  get databaseUrl(): string | null {
    return this.pg?.url ?? null;
  }

  async destroy(): Promise<void> {
    await this.stop('SIGKILL');
    await this.pg?.drop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
