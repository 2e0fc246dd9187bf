/**
 * What the scenarios kept in files of their own (S6 federation, S7 appservice) need from the
 * orchestrator (run.ts), which owns the processes, databases and cleanup, plus small Matrix
 * client helpers. run.ts builds a BenchContext; a scenario returns rows for its table.
 */
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import type { HttpClient } from './http-client.ts';
import type { LoadResult, LoadSpec } from './load.ts';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BENCH_DIR = fileURLToPath(new URL('.', import.meta.url));
export const CLIENT = '/_matrix/client/v3';
export const PASSWORD = 'bench password';

/** One row of the results table (run.ts prints and writes them). */
export interface BenchRow {
  id: string;
  scenario: string;
  figure: string;
  floor: string;
  ratio: string;
  verdict: 'PASS' | 'MISS' | 'floor' | 'info' | 'n/a' | 'error';
}

export interface BenchServer {
  name: string;
  proc: ChildProcess;
  port: number;
  pid: number;
  logFile: string;
}

export interface BenchContext {
  log(msg: string): void;
  freePort(): Promise<number>;
  /** A fresh PostgreSQL database (dropped at cleanup if still there); returns its URL. */
  createDatabase(name: string): Promise<string>;
  dropDatabase(name: string): Promise<void>;
  /** A `node script` child (`--import tsx` for a .ts script) with a clean environment plus `env`; output to logFile. */
  spawnNode(name: string, nodeArgs: string[], script: string, args: string[], env: Record<string, string>): { proc: ChildProcess; logFile: string };
  waitReady(name: string, proc: ChildProcess, port: number, readyPath: string, logFile: string): Promise<void>;
  /** An autocannon run in a process of its own (load.ts). */
  runLoad(spec: LoadSpec): Promise<LoadResult>;
  stopServer(s: BenchServer): Promise<void>;
  /** The built product's entry point (dist/src/main.js, built before any scenario runs). */
  productScript: string;
  /** Node arguments for a product server: those `npm run start:prod` uses, plus `--cpu-prof` when `profile` and BENCH_CPU_PROF is set. */
  productNodeArgs(profile: boolean): string[];
  /** A scratch directory removed at cleanup. */
  scratchDir: string;
  /** Notes for under the table. */
  notes: string[];
  /** Figures of this run that S6's and S7's targets are ratios to (issue 18); null when not measured. */
  references: {
    /** S1 on PostgreSQL at 32 connections. */
    s1PostgresReqPerSec: number | null;
    /** F2's serial (one connection) PUT p50. */
    f2SerialP50Ms: number | null;
    /** F2 at 32 connections. */
    f2ReqPerSec: number | null;
  };
}

/** A row's ratio, target and verdict for `figure ≥ factor × reference`, or n/a without a reference. */
export function atLeast(figure: number, factor: number, reference: number | null, name: string): Pick<BenchRow, 'ratio' | 'verdict'> {
  if (reference === null || !Number.isFinite(reference) || reference <= 0) return { ratio: `target ≥ ${factor} × ${name} (not measured in this run)`, verdict: 'n/a' };
  return { ratio: `${fmt(figure / reference, 2)} × ${name} (target ≥ ${factor})`, verdict: figure >= factor * reference ? 'PASS' : 'MISS' };
}

export const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '—';
export const ms = (n: number): string => `${fmt(n, n < 10 ? 2 : 1)} ms`;

export function failedRow(id: string, scenario: string, e: unknown): BenchRow {
  const msg = e instanceof Error ? e.message.split('\n')[0]! : String(e);
  return { id, scenario, figure: `failed: ${msg}`, floor: '—', ratio: '—', verdict: 'error' };
}

/**
 * The product server (src/main.ts) from a YAML config file: what the scenarios with several
 * servers or an appservice need beyond run.ts's environment-configured launch. Metrics are off
 * (two servers would both want port 9464); sends are not rate limited (a benchmark measures
 * capacity).
 */
export async function startConfiguredServer(
  ctx: BenchContext,
  name: string,
  opts: { serverName: string; databaseUrl: string; port?: number; config?: Record<string, unknown>; profile?: boolean },
): Promise<BenchServer> {
  const port = opts.port ?? (await ctx.freePort());
  const configFile = path.join(ctx.scratchDir, `${name}.config.yaml`);
  writeFileSync(
    configFile,
    stringify({
      server_name: opts.serverName,
      listen: { host: '127.0.0.1', port },
      database: { url: opts.databaseUrl },
      registration: { enabled: true },
      rate_limits: { send_to_device: { per_second: 0 } },
      limits: { device_queue_max: 10_000_000 },
      metrics: { enabled: false },
      log: { level: 'warn' },
      ...opts.config,
    }),
  );
  const { proc, logFile } = ctx.spawnNode(name, ctx.productNodeArgs(opts.profile === true), ctx.productScript, [], { CONFIG_FILE: configFile });
  await ctx.waitReady(name, proc, port, '/_matrix/client/versions', logFile);
  return { name, proc, port, pid: proc.pid!, logFile };
}

export interface Device {
  userId: string;
  deviceId: string;
  token: string;
  /** The sync token to send next (acknowledges what it covers). */
  since: string;
}

export interface SyncBody {
  next_batch: string;
  to_device: { events: { sender: string; type: string; content: Record<string, unknown> }[] };
}

export async function register(c: HttpClient, username: string, deviceId?: string): Promise<Device> {
  const body = await c.ok<{ user_id: string; device_id: string; access_token: string }>('POST', `${CLIENT}/register`, {
    body: { username, password: PASSWORD, auth: { type: 'm.login.dummy' }, ...(deviceId ? { device_id: deviceId } : {}) },
  });
  return { userId: body.user_id, deviceId: body.device_id, token: body.access_token, since: 'v1.0' };
}

export function syncPath(since: string | null, timeoutMs = 0): string {
  const q = new URLSearchParams();
  if (since !== null) q.set('since', since);
  if (timeoutMs > 0) q.set('timeout', String(timeoutMs));
  return `${CLIENT}/sync?${q}`;
}

let txnCounter = 0;
export function sendPath(type: string): string {
  return `${CLIENT}/sendToDevice/${encodeURIComponent(type)}/s${Date.now()}-${txnCounter++}`;
}

/** Rows of the device's queue until now are acknowledged; its `since` is current. */
export async function drain(c: HttpClient, d: Device): Promise<void> {
  for (;;) {
    const s = await c.ok<SyncBody>('GET', syncPath(d.since), { token: d.token });
    d.since = s.next_batch;
    if (s.to_device.events.length === 0) return;
  }
}

/** One send of a stream: from `from` to one device of `to`. */
export interface StreamTurn {
  from: Device;
  to: { userId: string; deviceId: string };
}

/**
 * A stream of `amount` sends of `type`, by autocannon in a process of its own (load.ts) as S1's
 * are, `connections` in flight, send n being `turns[n mod turns.length]` with content `{ n }`
 * (n of the turn). Throws unless every send was answered 2xx.
 */
export async function sendStream(ctx: BenchContext, port: number, type: string, turns: readonly StreamTurn[], connections: number, amount: number): Promise<LoadResult> {
  const variants = turns.map(({ from, to }, n) => ({
    headers: { authorization: `Bearer ${from.token}` },
    body: JSON.stringify({ messages: { [to.userId]: { [to.deviceId]: { n } } } }),
  }));
  const load = await ctx.runLoad({
    url: `http://127.0.0.1:${port}`,
    method: 'PUT',
    pathPrefix: `${CLIENT}/sendToDevice/${type}`,
    headers: { 'content-type': 'application/json' },
    body: variants[0]?.body ?? '{}',
    variants,
    connections,
    warmupSeconds: 0,
    amount,
  });
  if (load.ok2xx !== amount) throw new Error(`${fmt(load.ok2xx)} of ${fmt(amount)} sends answered 2xx (${load.non2xx} non-2xx, ${load.errors} errors, ${load.timeouts} timeouts)`);
  return load;
}
