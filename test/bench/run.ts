/**
 * `npm run bench`: the floors and the product, measured in one run on this machine, printed as a
 * table and written to test/bench/RESULTS.md. A benchmark, not a test: misses are reported, never
 * a failing exit status.
 *
 * Processes: this orchestrator (the client for S2–S5, S6's latency and the streams' receivers), each
 * server in its own process (floors F1/F2/F3, the product on PostgreSQL, the product on PGlite),
 * and autocannon in its own process (load.ts) for the throughput runs, S6's and S7's streams of
 * sends included. Everything is on loopback; databases and data directories
 * are created fresh and removed at the end.
 *
 * Targets are ratios to floors (and to S1) of the same run where issue 18 asks for them, so a
 * busy machine moves figure and reference together. A subset measures what its targets refer to:
 * S2–S6 measure F2 (at 32 connections and serially), PGLITE measures F3, S6 and S7 measure S1 on
 * PostgreSQL at 32 connections.
 *
 * Knobs (environment): BENCH_DATABASE_URL (an admin URL, default postgres://postgres@127.0.0.1:5432/postgres),
 * BENCH_ONLY (comma list of F1,F2,F3,F4,S1,S2,S3,S4,S5,S6,S7,K1,K2,KIT,PGLITE,PGB,LB; PGLITE is the product on PGlite: M1, S1 and S2 there; PGB is S1 through PgBouncer, LB S1 on 1 and 2 processes behind HAProxy, each against S1 direct measured beside it), BENCH_SECONDS (measured seconds per
 * throughput run at 32 connections, 10), BENCH_SCALE_CONNECTIONS (the concurrencies of S1 and its floors,
 * 1,8,32,128), BENCH_SCALE_SECONDS (measured seconds at the other concurrencies than 32, 5),
 * BENCH_S3_SCALE_DEVICES (S3's other device counts besides 1,000, 100,5000), BENCH_S5_CONNECTIONS (10000), BENCH_S5_DEVICES (distinct devices behind
 * them, 2000), BENCH_S4_BACKLOG (100000), BENCH_CPU_PROF (a directory: run the PostgreSQL product server,
 * S6's two servers and S7's server under --cpu-prof), BENCH_S6_ROUNDS (1000), BENCH_S6_MESSAGES (20000),
 * BENCH_S7_MESSAGES (20000), BENCH_SERVER_NODE_ARGS (node flags for the product servers instead of those
 * of `npm run start:prod`; the product runs built, see PRODUCT_SCRIPT), BENCH_KEEP_LOGS (1: keep the servers' logs, in a directory named at the end). S6 (federation-scenario.ts) and S7 (appservice-scenario.ts) are in files of
 * their own and get what they need from here as a BenchContext.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
// Only the token format and hash, so S3's inserted devices authenticate like logged-in ones.
import { hashToken, newAccessToken } from '../../src/crypto/tokens.ts';
import { HttpClient, pool, summarize } from './http-client.ts';
import { appserviceScenario } from './appservice-scenario.ts';
import { federationScenario } from './federation-scenario.ts';
import { keysScenario } from './keys-scenario.ts';
import { kitScenario } from './kit-scenario.ts';
import type { LoadResult, LoadSpec } from './load.ts';
import type { BenchContext, BenchRow } from './scenario-support.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BENCH_DIR = fileURLToPath(new URL('.', import.meta.url));
const ADMIN_URL = process.env.BENCH_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const ONLY = new Set((process.env.BENCH_ONLY ?? '').split(',').map((s) => s.trim().toUpperCase()).filter(Boolean));
const want = (k: string): boolean => ONLY.size === 0 || ONLY.has(k);
const SECONDS = Number(process.env.BENCH_SECONDS || 10);
const WARMUP_SECONDS = 3;
const CONNECTIONS = 32;
/** S1 and its floors at these concurrencies (issue 18's scaling rows); CONNECTIONS is always one. */
const SCALE_CONNECTIONS = [
  ...new Set([
    ...(process.env.BENCH_SCALE_CONNECTIONS || '1,8,32,128').split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0),
    CONNECTIONS,
  ]),
].sort((a, b) => a - b);
// Shorter windows off the headline concurrency keep the whole run near 10 minutes on 2 cores.
const SCALE_SECONDS = Math.min(SECONDS, Number(process.env.BENCH_SCALE_SECONDS || 5));
const secondsAt = (connections: number): number => (connections === CONNECTIONS ? SECONDS : SCALE_SECONDS);
const S2_ROUNDS = 2000;
const S2_WARMUP = 100;
const S3_DEVICES = 1000;
/** S3's scaling rows: users whose devices are inserted into the database, not logged in (see s3Scaling). */
const S3_SCALE_DEVICES = (process.env.BENCH_S3_SCALE_DEVICES || '100,5000').split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0 && n !== S3_DEVICES);
const S3_REQUESTS = 12;
const S3_WARMUP = 2;
const S4_BACKLOG = Number(process.env.BENCH_S4_BACKLOG || 100_000);
const S4_FILL_MAX_MS = 360_000;
const S5_CONNECTIONS = Number(process.env.BENCH_S5_CONNECTIONS || 10_000);
const S5_DEVICES = Math.min(S5_CONNECTIONS, Number(process.env.BENCH_S5_DEVICES || 2000));
const CPU_PROF = process.env.BENCH_CPU_PROF;
/** M1: the product's idle RSS on a fresh PGlite directory, at most this × F4's. */
const M1_TARGET = 0.6;
const WATCHDOG_MS = 25 * 60_000;
const SERVER_NAME = 'bench.local';
const SERVER_USER = `@:${SERVER_NAME}`;
const PASSWORD = 'bench password';
const CLIENT = '/_matrix/client/v3';

// ---------------------------------------------------------------------------------------------
// Processes

const children = new Set<ChildProcess>();
const cleanups: (() => Promise<void> | void)[] = [];
const logDir = mkdtempSync(path.join(os.tmpdir(), 'tds-bench-logs-'));

function log(msg: string): void {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Environment for a child: ours minus anything that would configure the product server. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  const strip = /^(CONFIG_FILE|SERVER_NAME|LISTEN_|DATABASE_|DATA_DIR|ENABLE_REGISTRATION|SYNC_TO_DEVICE_LIMIT|MAX_|TXN_|DEVICE_QUEUE_MAX|TO_DEVICE_TTL|RATE_LIMIT_|FEDERATION_|APPSERVICE|LOG_LEVEL|NODE_OPTIONS)/;
  for (const [k, v] of Object.entries(process.env)) if (!strip.test(k)) env[k] = v;
  return { ...env, ...extra };
}

interface Server {
  name: string;
  proc: ChildProcess;
  port: number;
  pid: number;
  logFile: string;
}

function spawnNode(name: string, nodeArgs: string[], script: string, args: string[], env: Record<string, string>): { proc: ChildProcess; logFile: string } {
  const logFile = path.join(logDir, `${name}.log`);
  const out = createWriteStream(logFile);
  // TypeScript (floors, load generator, appservice bot) through tsx; the built product as it is.
  const loader = script.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const proc = spawn(process.execPath, [...nodeArgs, ...loader, script, ...args], {
    cwd: ROOT,
    env: cleanEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout?.pipe(out);
  proc.stderr?.pipe(out);
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  return { proc, logFile };
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '';
  }
}

async function waitReady(name: string, proc: ChildProcess, port: number, readyPath: string, logFile: string): Promise<void> {
  const deadline = Date.now() + 90_000;
  const probe = new HttpClient('127.0.0.1', port, 1);
  try {
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`${name} exited with ${proc.exitCode}:\n${tail(logFile)}`);
      try {
        const res = await probe.request('GET', readyPath);
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error(`${name} did not become ready in 90 s:\n${tail(logFile)}`);
  } finally {
    probe.close();
  }
}

async function stopServer(s: Server): Promise<void> {
  if (s.proc.exitCode !== null || s.proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => s.proc.once('exit', () => resolve()));
  s.proc.kill('SIGTERM');
  const timer = setTimeout(() => s.proc.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

/** A floor server; `store` is F2's PostgreSQL URL or F3's PGlite data directory. */
async function startFloor(mode: 'f1' | 'f2' | 'f3' | 'f4', store?: string): Promise<Server> {
  const port = await freePort();
  const { proc, logFile } = spawnNode(mode, [], path.join(BENCH_DIR, 'floor-server.ts'), [mode, String(port), ...(store ? [store] : [])], {});
  await waitReady(mode, proc, port, '/ready', logFile);
  return { name: mode, proc, port, pid: proc.pid!, logFile };
}

/**
 * The product is measured as it runs in production: `npm run build`'s JavaScript, started the
 * way `npm run start:prod` starts it (`node <flags> dist/src/main.js`). Its node flags are read
 * from that script rather than repeated here (S5's RSS depends on V8's heap flags);
 * BENCH_SERVER_NODE_ARGS (space-separated) replaces them, to compare flags.
 */
const PRODUCT_SCRIPT = path.join(ROOT, 'dist/src/main.js');

function startScriptNodeArgs(): string[] {
  const override = process.env.BENCH_SERVER_NODE_ARGS;
  if (override !== undefined) return override.split(/\s+/).filter(Boolean);
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts?: Record<string, string> };
  const start = pkg.scripts?.['start:prod'] ?? '';
  // `exec` only makes npm's child the server itself (so npm's SIGTERM reaches it); not a flag.
  const words = start.trim().split(/\s+/).filter((w, i) => !(i === 0 && w === 'exec'));
  if (words[0] !== 'node' || words[words.length - 1] !== 'dist/src/main.js') {
    throw new Error(`package.json scripts.start:prod is not "[exec] node <flags> dist/src/main.js" (the bench reads the server's node flags from it): ${start}`);
  }
  return words.slice(1, -1);
}

/** Builds the product (`npm run build`) so the bench never measures a stale dist/. */
function buildProduct(): void {
  log('building the product (npm run build)');
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
}

/** Node arguments for a product server: `npm run start:prod`'s flags, plus --cpu-prof when profiling is asked for. */
function productNodeArgs(profile: boolean): string[] {
  return [...startScriptNodeArgs(), ...(profile && CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(CPU_PROF)}`] : [])];
}

async function startProduct(name: string, db: { url: string } | { dataDir: string }, profile: boolean, extraEnv: Record<string, string> = {}): Promise<Server> {
  const port = await freePort();
  const env: Record<string, string> = {
    LISTEN_HOST: '127.0.0.1',
    LISTEN_PORT: String(port),
    SERVER_NAME,
    ENABLE_REGISTRATION: 'true',
    LOG_LEVEL: 'warn',
    // A benchmark measures capacity: no per-device send rate limit (S1 and the S4 fill send from
    // one device), and a queue cap above S4's backlog so maintenance never trims it.
    RATE_LIMIT_SEND_TO_DEVICE_PER_SECOND: '0',
    DEVICE_QUEUE_MAX: String(10 * S4_BACKLOG),
    ...('url' in db ? { DATABASE_URL: db.url } : { DATA_DIR: db.dataDir }),
    ...extraEnv,
  };
  const { proc, logFile } = spawnNode(name, productNodeArgs(profile), PRODUCT_SCRIPT, [], env);
  await waitReady(name, proc, port, '/_matrix/client/versions', logFile);
  return { name, proc, port, pid: proc.pid!, logFile };
}

async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  const { proc, logFile } = spawnNode(`load-${Date.now()}`, [], path.join(BENCH_DIR, 'load.ts'), [JSON.stringify(spec)], {});
  const exitCode = await new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const text = readFileSync(logFile, 'utf8').trim().split('\n');
  const last = text[text.length - 1] ?? '';
  if (exitCode !== 0 || !last.startsWith('{')) throw new Error(`load generator failed (${exitCode}):\n${text.slice(-10).join('\n')}`);
  const r = JSON.parse(last) as LoadResult;
  if (r.errors > 0 || r.non2xx > 0 || r.timeouts > 0) log(`  load: ${r.errors} errors, ${r.non2xx} non-2xx, ${r.timeouts} timeouts`);
  return r;
}

// ---------------------------------------------------------------------------------------------
// /proc readings of a server process

function procStatusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime + stime
}

/** Waits until the process uses (almost) no CPU for a second: its backlog of work is done. */
async function waitIdle(pid: number, maxMs = 60_000): Promise<void> {
  const deadline = Date.now() + maxMs;
  let quiet = 0;
  let last = cpuTicks(pid);
  while (Date.now() < deadline && quiet < 4) {
    await sleep(250);
    const now = cpuTicks(pid);
    quiet = now - last <= 1 ? quiet + 1 : 0;
    last = now;
  }
}

const mb = (kb: number): number => kb / 1024;

// ---------------------------------------------------------------------------------------------
// Matrix helpers

interface Device {
  userId: string;
  deviceId: string;
  token: string;
  /** The sync token to send next (acknowledges what it covers). */
  since: string;
}

interface SyncBody {
  next_batch: string;
  to_device: { events: { sender: string; type: string; content: Record<string, unknown> }[] };
}

async function register(c: HttpClient, username: string, deviceId?: string): Promise<Device> {
  const body = await c.ok<{ user_id: string; device_id: string; access_token: string }>('POST', `${CLIENT}/register`, {
    body: { username, password: PASSWORD, auth: { type: 'm.login.dummy' }, ...(deviceId ? { device_id: deviceId } : {}) },
  });
  return { userId: body.user_id, deviceId: body.device_id, token: body.access_token, since: 'v1.0' };
}

async function login(c: HttpClient, username: string): Promise<Device> {
  const body = await c.ok<{ user_id: string; device_id: string; access_token: string }>('POST', `${CLIENT}/login`, {
    body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: username }, password: PASSWORD },
  });
  return { userId: body.user_id, deviceId: body.device_id, token: body.access_token, since: 'v1.0' };
}

/** One user with `n` devices: registration, then n−1 logins (each costs the server one scrypt). */
async function userWithDevices(c: HttpClient, username: string, n: number): Promise<Device[]> {
  const devices = [await register(c, username)];
  await pool(n - 1, 8, async () => {
    devices.push(await login(c, username));
  });
  return devices;
}

function syncPath(since: string | null, timeoutMs = 0): string {
  const q = new URLSearchParams();
  if (since !== null) q.set('since', since);
  if (timeoutMs > 0) q.set('timeout', String(timeoutMs));
  return `${CLIENT}/sync?${q}`;
}

/** Logins done and the time they took: what one more device costs on this machine. */
let loginSeconds = 0;
let loginCount = 0;

let txnCounter = 0;
const txn = (): string => `b${Date.now()}-${txnCounter++}`;

function sendPath(type: string): string {
  return `${CLIENT}/sendToDevice/${encodeURIComponent(type)}/${txn()}`;
}

// ---------------------------------------------------------------------------------------------
// Results

/** `rank` orders rows of one id in the table (e.g. by connections); rows are measured in another order. */
type Row = BenchRow & { rank?: number };

const rows: Row[] = [];
const notes: string[] = [];
const AUTOVACUUM_WAIT_MS = 120_000;
const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '—';
const ms = (n: number): string => `${fmt(n, n < 10 ? 2 : 1)} ms`;
const verdict = (ok: boolean): 'PASS' | 'MISS' => (ok ? 'PASS' : 'MISS');
const conns = (n: number): string => `${n} connection${n === 1 ? '' : 's'}`;

function failed(id: string, scenario: string, e: unknown): void {
  const msg = e instanceof Error ? e.message.split('\n')[0]! : String(e);
  log(`${id} failed: ${e instanceof Error ? e.message : String(e)}`);
  rows.push({ id, scenario, figure: `failed: ${msg}`, floor: '—', ratio: '—', verdict: 'error' });
}

/** S1 on PostgreSQL at CONNECTIONS: what S6's and S7's targets are ratios to. */
let s1PostgresReqPerSec: number | null = null;

// ---------------------------------------------------------------------------------------------
// Scenarios

function loadSpec(port: number, pathPrefix: string, token: string | null, body: string, extra: Partial<LoadSpec> = {}): LoadSpec {
  return {
    url: `http://127.0.0.1:${port}`,
    method: 'PUT',
    pathPrefix,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body,
    connections: CONNECTIONS,
    warmupSeconds: WARMUP_SECONDS,
    durationSeconds: SECONDS,
    ...extra,
  };
}

/** A throughput run at `connections`, for the length of window that concurrency gets. */
const at = (connections: number): Partial<LoadSpec> => ({ connections, durationSeconds: secondsAt(connections) });

const s1Body = (to: Device): string => JSON.stringify({ messages: { [to.userId]: { [to.deviceId]: { body: 'bench message', n: 1 } } } });

/** Serial PUTs on one keep-alive connection: the latency floor for the serial scenarios. */
async function serialPuts(c: HttpClient, prefix: string, body: string, n: number): Promise<{ p50: number; p99: number }> {
  const samples: number[] = [];
  for (let i = 0; i < n + 100; i++) {
    const t0 = performance.now();
    await c.ok('PUT', `${prefix}/s${i}`, { body });
    if (i >= 100) samples.push(performance.now() - t0);
  }
  return summarize(samples);
}

/** A database floor measured at several concurrencies, and serially. */
interface DbFloor {
  byConnections: Map<number, LoadResult>;
  serial: { p50: number; p99: number } | null;
}

interface Floors {
  /** F2: one postgres.js INSERT per request. */
  f2: DbFloor;
  /** F3: one PGlite INSERT per request, durable like the product's default. */
  f3: DbFloor;
  parkedRss: { idleKb: number; parkedKb: number } | null;
  /** F4: F1 plus a bare PGlite (default options) on a fresh directory, idle: M1's memory floor. */
  pgliteIdleKb: number | null;
}

const dummyTarget: Device = { userId: `@bob:${SERVER_NAME}`, deviceId: 'BOBDEV', token: '', since: '' };

/** Throughput at each of `counts` connections, then 1,000 serial PUTs; one row per concurrency. */
async function measureDbFloor(id: 'F2' | 'F3', scenario: string, server: Server, counts: number[]): Promise<DbFloor> {
  const result: DbFloor = { byConnections: new Map(), serial: null };
  for (const n of counts) {
    log(`${id}: ${scenario}, ${conns(n)}, ${secondsAt(n)} s`);
    result.byConnections.set(n, await runLoad(loadSpec(server.port, '/floor/m.bench', 'unchecked', s1Body(dummyTarget), at(n))));
  }
  const c = new HttpClient('127.0.0.1', server.port, 1);
  try {
    result.serial = await serialPuts(c, '/floor/m.bench', s1Body(dummyTarget), 1000);
  } finally {
    c.close();
  }
  for (const [n, r] of result.byConnections) {
    const serial = n === CONNECTIONS && result.serial !== null ? `; serial (1 conn) p50 ${ms(result.serial.p50)}, p99 ${ms(result.serial.p99)}` : '';
    rows.push({
      id,
      scenario: `${scenario}, ${conns(n)}`,
      figure: `${fmt(r.reqPerSec)} req/s; p50 ${ms(r.p50)}, p99 ${ms(r.p99)}${serial}`,
      floor: '—',
      ratio: '—',
      verdict: 'floor',
      rank: n,
    });
  }
  return result;
}

async function floors(): Promise<Floors> {
  const result: Floors = { f2: { byConnections: new Map(), serial: null }, f3: { byConnections: new Map(), serial: null }, parkedRss: null, pgliteIdleKb: null };
  if (want('F1') || want('S5')) {
    log(`F1: bare Hono, ${CONNECTIONS} connections, ${SECONDS} s`);
    const f1 = await startFloor('f1');
    try {
      const r = await runLoad(loadSpec(f1.port, '/floor/m.bench', 'unchecked', s1Body(dummyTarget)));
      rows.push({ id: 'F1', scenario: 'bare Hono + @hono/node-server, PUT with JSON body', figure: `${fmt(r.reqPerSec)} req/s; p50 ${ms(r.p50)}, p99 ${ms(r.p99)}`, floor: '—', ratio: '—', verdict: 'floor' });
      if (want('S5')) {
        log(`F1: RSS with ${S5_CONNECTIONS} parked requests`);
        result.parkedRss = await parkFloor(f1, S5_CONNECTIONS);
        if (result.parkedRss !== null) {
          const { idleKb, parkedKb } = result.parkedRss;
          rows.push({
            id: 'F1',
            scenario: `F1 holding ${fmt(S5_CONNECTIONS)} parked GET requests (S5's memory floor)`,
            figure: `RSS ${fmt(mb(parkedKb))} MB (idle ${fmt(mb(idleKb))} MB; +${fmt((parkedKb - idleKb) / S5_CONNECTIONS, 1)} kB per request)`,
            floor: '—',
            ratio: '—',
            verdict: 'floor',
          });
        }
      }
    } catch (e) {
      failed('F1', 'bare Hono', e);
    } finally {
      await stopServer(f1);
    }
  }
  // Every PostgreSQL target but S5's memory and S7's is a ratio to F2 (S7's is to S1, itself judged against F2).
  if (['F2', 'S1', 'S2', 'S3', 'S4', 'S5', 'S6', 'K1', 'K2'].some(want)) {
    const dbName = `tds_bench_f2_${randomBytes(4).toString('hex')}`;
    const url = await createDatabase(dbName);
    const f2 = await startFloor('f2', url);
    try {
      // The scaling concurrencies only where S1 rows will be judged against them.
      result.f2 = await measureDbFloor('F2', 'F1 + one postgres.js INSERT (one-index table)', f2, want('F2') || want('S1') ? SCALE_CONNECTIONS : [CONNECTIONS]);
    } catch (e) {
      failed('F2', 'Hono + INSERT', e);
    } finally {
      await stopServer(f2);
      await dropDatabase(dbName);
    }
  }
  if (want('F3') || want('PGLITE')) {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'tds-bench-f3-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const f3 = await startFloor('f3', path.join(dataDir, 'pglite'));
    try {
      result.f3 = await measureDbFloor('F3', 'F1 + one PGlite INSERT (one-index table; fsync per commit, as the product opens PGlite)', f3, SCALE_CONNECTIONS);
    } catch (e) {
      failed('F3', 'Hono + PGlite INSERT', e);
    } finally {
      await stopServer(f3);
      rmSync(dataDir, { recursive: true, force: true });
    }
  }
  if (want('F4') || want('PGLITE')) {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'tds-bench-f4-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    log('F4: F1 + a bare PGlite with its default options, opened on a fresh directory, idle RSS');
    try {
      const f4 = await startFloor('f4', path.join(dataDir, 'pglite'));
      try {
        await waitIdle(f4.pid);
        result.pgliteIdleKb = procStatusKb(f4.pid, 'VmRSS');
        rows.push({
          id: 'F4',
          scenario: 'F1 + a bare PGlite (`new PGlite(dir)`, default options) on a fresh directory, idle: RSS',
          figure: `${fmt(mb(result.pgliteIdleKb))} MB`,
          floor: '—',
          ratio: '—',
          verdict: 'floor',
        });
      } finally {
        await stopServer(f4);
      }
    } catch (e) {
      failed('F4', 'Hono + bare PGlite, idle RSS', e);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }
  return result;
}

type Store = 'PostgreSQL' | 'PGlite';

/** The floor S1 on `store` is judged against: F2 on PostgreSQL, F3 on PGlite. */
const floorOf = (store: Store, fl: Floors): { id: 'F2' | 'F3'; floor: DbFloor } => (store === 'PostgreSQL' ? { id: 'F2', floor: fl.f2 } : { id: 'F3', floor: fl.f3 });

/**
 * S1 at 1 connection is judged against its floor measured in turns with it, not minutes earlier:
 * one client's serial requests weigh every scheduling hiccup of this shared machine, and the
 * floors phase and S1 were seen to differ by 1.6 × in F2 alone between two runs ten minutes
 * apart. A fresh floor server runs beside the product; each is warmed for PAIRED_WARMUP_SECONDS
 * at CONNECTIONS connections, then the two take turns (floor, product, product, floor, floor,
 * product: a drift favours neither), PAIRED_SECONDS each after a warm-up; each side's median run
 * counts.
 */
const PAIRED_ROUNDS = 3;
const PAIRED_SECONDS = 4;
const PAIRED_WARMUP_SECONDS = 4;

async function pairedAtOne(store: Store, server: Server, sender: Device, target: Device): Promise<{ product: LoadResult; floor: LoadResult; sent: number }> {
  const floorId = store === 'PostgreSQL' ? 'f2' : 'f3';
  const dbName = `tds_bench_paired_${randomBytes(4).toString('hex')}`;
  const dataDir = store === 'PGlite' ? mkdtempSync(path.join(os.tmpdir(), 'tds-bench-paired-')) : null;
  const floorServer = await startFloor(floorId, dataDir === null ? await createDatabase(dbName) : path.join(dataDir, 'pglite'));
  const spec = { connections: 1, warmupSeconds: 2, durationSeconds: PAIRED_SECONDS };
  const products: LoadResult[] = [];
  const floors: LoadResult[] = [];
  let sent = 0;
  try {
    // Both warmed alike first, so that serial requests meet code V8 has optimised on either side
    // (a server runs for days; the product's first seconds at one request at a time are its JIT's).
    const warm = { connections: CONNECTIONS, warmupSeconds: 0, durationSeconds: PAIRED_WARMUP_SECONDS };
    await runLoad(loadSpec(floorServer.port, '/floor/m.bench', 'unchecked', s1Body(dummyTarget), warm));
    sent += (await runLoad(loadSpec(server.port, `${CLIENT}/sendToDevice/m.bench`, sender.token, s1Body(target), warm))).ok2xx;
    for (const turn of ['floor', 'product', 'product', 'floor', 'floor', 'product'] as const) {
      if (turn === 'floor') floors.push(await runLoad(loadSpec(floorServer.port, '/floor/m.bench', 'unchecked', s1Body(dummyTarget), spec)));
      else products.push(await runLoad(loadSpec(server.port, `${CLIENT}/sendToDevice/m.bench`, sender.token, s1Body(target), spec)));
    }
  } finally {
    await stopServer(floorServer);
    if (dataDir === null) await dropDatabase(dbName);
    else rmSync(dataDir, { recursive: true, force: true });
  }
  const median = (runs: LoadResult[]): LoadResult => [...runs].sort((a, b) => a.reqPerSec - b.reqPerSec)[Math.floor(runs.length / 2)] as LoadResult;
  return { product: median(products), floor: median(floors), sent: sent + products.reduce((n, r) => n + r.ok2xx, 0) };
}

/** S1 at each of `counts` connections; returns the requests answered 2xx (they queue up for S4). */
async function s1(store: Store, server: Server, sender: Device, target: Device, fl: Floors, counts: number[]): Promise<number> {
  let sent = 0;
  const { id: floorId, floor } = floorOf(store, fl);
  for (const n of counts) {
    const paired = n === 1;
    log(
      `S1 (${store}): sendToDevice to one device, distinct txnIds, ${conns(n)}, ${
        paired ? `${PAIRED_ROUNDS} turns of ${PAIRED_SECONDS} s with ${floorId} in turns` : `${secondsAt(n)} s`
      }`,
    );
    try {
      let r: LoadResult;
      let ref: number;
      if (paired) {
        const p = await pairedAtOne(store, server, sender, target);
        r = p.product;
        ref = p.floor.reqPerSec;
        sent += p.sent;
      } else {
        r = await runLoad(loadSpec(server.port, `${CLIENT}/sendToDevice/m.bench`, sender.token, s1Body(target), at(n)));
        ref = floor.byConnections.get(n)?.reqPerSec ?? NaN;
        sent += r.ok2xx;
      }
      if (store === 'PostgreSQL' && n === CONNECTIONS) s1PostgresReqPerSec = r.reqPerSec;
      const ratio = r.reqPerSec / ref;
      const goal = n === CONNECTIONS ? 0.75 : n === 1 ? 0.6 : null;
      rows.push({
        id: 'S1',
        scenario: `sendToDevice to one device, ${store}, ${conns(n)}`,
        figure: `${fmt(r.reqPerSec)} req/s; p50 ${ms(r.p50)}, p99 ${ms(r.p99)}${r.non2xx + r.errors > 0 ? ` (${fmt(r.non2xx + r.errors)} failed!)` : ''}${paired ? ` (median of ${PAIRED_ROUNDS} turns)` : ''}`,
        floor: paired ? `${floorId} ${fmt(ref)} req/s (${conns(n)}, in turns with S1, median of ${PAIRED_ROUNDS})` : `${floorId} ${fmt(ref)} req/s (${conns(n)})`,
        // Targets at CONNECTIONS (issues 7 and 18) and at 1 connection (issue 30: one client
        // sending serially); the other counts show how it scales.
        ratio: goal === null ? `${fmt(ratio, 2)} × ${floorId} (scaling, no target)` : `${fmt(ratio, 2)} × ${floorId} (target ≥ ${goal})`,
        verdict: goal === null ? 'info' : Number.isFinite(ratio) ? verdict(ratio >= goal) : 'n/a',
        rank: (store === 'PGlite' ? 1000 : 0) + n,
      });
    } catch (e) {
      failed('S1', `sendToDevice, ${store}, ${conns(n)}`, e);
    }
  }
  return sent;
}

async function s2(store: Store, c: HttpClient, me: Device, rounds: number, fl: Floors): Promise<void> {
  log(`S2 (${store}): ${rounds} ping → pong round trips through ${SERVER_USER}`);
  try {
    const first = await c.ok<SyncBody>('GET', syncPath(null), { token: me.token });
    let since = first.next_batch;
    const samples: number[] = [];
    for (let i = 0; i < rounds + S2_WARMUP; i++) {
      const nonce = `n${i}-${Date.now()}`;
      let poll = c.ok<SyncBody>('GET', syncPath(since, 30_000), { token: me.token });
      // Let the long-poll reach the server and park before the ping is sent.
      await sleep(3);
      const t0 = performance.now();
      const put = c.ok('PUT', sendPath('org.example.ping'), { token: me.token, body: { messages: { [SERVER_USER]: { '': { nonce } } } } });
      let got = false;
      while (!got) {
        const res = await poll;
        since = res.next_batch;
        got = res.to_device.events.some((e) => e.type === 'org.example.pong' && e.content.nonce === nonce);
        if (!got) poll = c.ok<SyncBody>('GET', syncPath(since, 30_000), { token: me.token });
      }
      const t1 = performance.now();
      await put;
      if (i >= S2_WARMUP) samples.push(t1 - t0);
    }
    const s = summarize(samples);
    // A ratio to the serial floor of the same store (issue 18): a busy machine slows both.
    const { id: floorId, floor } = floorOf(store, fl);
    const maxP50 = 3 * (floor.serial?.p50 ?? NaN);
    rows.push({
      id: 'S2',
      scenario: `server-user ping → pong → woken long-poll, ${store} (n=${s.n})`,
      figure: `p50 ${ms(s.p50)}, p99 ${ms(s.p99)} (max ${ms(s.max)})`,
      floor: floor.serial ? `${floorId} serial PUT p50 ${ms(floor.serial.p50)}, p99 ${ms(floor.serial.p99)}` : '—',
      ratio: `p50 ${fmt(s.p50 / (floor.serial?.p50 ?? NaN), 1)} × ${floorId} serial p50 (target p50 ≤ 3 × = ${Number.isFinite(maxP50) ? ms(maxP50) : '—'}, p99 ≤ 15 ms)`,
      verdict: Number.isFinite(maxP50) ? verdict(s.p50 <= maxP50 && s.p99 <= 15) : 'n/a',
      rank: store === 'PGlite' ? 1 : 0,
    });
  } catch (e) {
    failed('S2', `server-user round trip, ${store}`, e);
  }
}

/** Syncs every device once (acknowledging what it had), `concurrency` at a time; returns events seen. */
async function drainAll(c: HttpClient, devices: Device[], concurrency = 16): Promise<number> {
  let events = 0;
  await pool(devices.length, concurrency, async (i) => {
    const d = devices[i]!;
    const res = await c.ok<SyncBody>('GET', syncPath(d.since), { token: d.token });
    d.since = res.next_batch;
    events += res.to_device.events.length;
  });
  return events;
}

/** `judged`: the 1,000-device row has issue 7's target; the other device counts show how it scales. */
async function s3(c: HttpClient, sender: Device, fanout: Device[], fl: Floors, judged: boolean): Promise<void> {
  const n = fanout.length;
  log(`S3: ${S3_REQUESTS} requests with "*" to a user with ${fmt(n)} devices (drained in between)`);
  try {
    const samples: number[] = [];
    let drainSeconds = 0;
    for (let i = 0; i < S3_REQUESTS + S3_WARMUP; i++) {
      const t0 = performance.now();
      await c.ok('PUT', sendPath('m.bench.fanout'), { token: sender.token, body: { messages: { [fanout[0]!.userId]: { '*': { n: i } } } } });
      const t1 = performance.now();
      if (i >= S3_WARMUP) samples.push(t1 - t0);
      const got = await drainAll(c, fanout);
      drainSeconds += (performance.now() - t1) / 1000;
      if (got !== n) log(`  S3: drained ${got} messages, expected ${n}`);
    }
    await drainAll(c, fanout); // acknowledge the last one: every queue is empty for S5
    const s = summarize(samples);
    log(`  S3: draining ${fmt(n)} devices after each request took ${fmt(drainSeconds / (S3_REQUESTS + S3_WARMUP), 2)} s on average`);
    rows.push({
      id: 'S3',
      scenario: `one request with "*" to a user with ${fmt(n)} devices (n=${s.n})`,
      figure: `p50 ${ms(s.p50)} (p99 ${ms(s.p99)}, ${fmt(n / (s.p50 / 1000))} msgs/s stored)`,
      floor: fl.f2.serial ? `F2 serial PUT p50 ${ms(fl.f2.serial.p50)}` : '—',
      ratio: judged ? 'target p50 ≤ 30 ms' : 'scaling (no target)',
      verdict: judged ? verdict(s.p50 <= 30) : 'info',
      rank: n,
    });
  } catch (e) {
    failed('S3', `fan-out to ${fmt(n)} devices`, e);
  }
}

/**
 * One user with `n` devices for S3's scaling rows: one registration through the API, then n−1
 * devices with access tokens inserted straight into the product's `devices` table, as a login
 * would leave them (token stored as the product's hash). A login costs one scrypt on the server
 * (~53 ms here), i.e. ~4.5 min for 5,000 devices, and S3 times only the send and needs the devices
 * only to exist and to sync (its drain), not to have come in through /login.
 */
async function userWithInsertedDevices(c: HttpClient, dbUrl: string, username: string, n: number): Promise<Device[]> {
  const first = await register(c, username);
  const devices = [first];
  const sql = postgres(dbUrl, { max: 1, onnotice: () => {}, connect_timeout: 10 });
  try {
    const now = Date.now();
    const pending: { user_id: string; device_id: string; token_hash: string; created_ts: number }[] = [];
    for (let i = 1; i < n; i++) {
      const token = newAccessToken();
      const deviceId = `S3D${String(i).padStart(5, '0')}`;
      devices.push({ userId: first.userId, deviceId, token, since: first.since });
      pending.push({ user_id: first.userId, device_id: deviceId, token_hash: hashToken(token), created_ts: now });
    }
    for (let i = 0; i < pending.length; i += 1000) await sql`insert into devices ${sql(pending.slice(i, i + 1000))}`;
  } finally {
    await sql.end({ timeout: 1 });
  }
  return devices;
}

async function s4(c: HttpClient, target: Device, expected: number, fl: Floors): Promise<void> {
  log(`S4: draining a backlog of ${expected.toLocaleString('en-US')} messages through /sync (limit 100)`);
  try {
    let since: string | null = null;
    let total = 0;
    let requests = 0;
    const perSync: number[] = [];
    const t0 = performance.now();
    for (;;) {
      const ts = performance.now();
      const res: SyncBody = await c.ok<SyncBody>('GET', syncPath(since), { token: target.token });
      perSync.push(performance.now() - ts);
      requests++;
      since = res.next_batch;
      total += res.to_device.events.length;
      if (res.to_device.events.length === 0) break;
    }
    const seconds = (performance.now() - t0) / 1000;
    const rate = total / seconds;
    // Whether a sync gets slower as the queue drains (e.g. scanning what was already deleted).
    const tenth = (k: number) => summarize(perSync.slice(Math.floor((k * perSync.length) / 10), Math.floor(((k + 1) * perSync.length) / 10)));
    target.since = since ?? target.since;
    // Issue 18: four times F2's request rate of the same run, in messages/s (was an absolute 30,000).
    const f2 = fl.f2.byConnections.get(CONNECTIONS)?.reqPerSec ?? NaN;
    rows.push({
      id: 'S4',
      scenario: `drain a ${fmt(total)}-message backlog for one device via /sync (limit 100)`,
      figure: `${fmt(rate)} msg/s (${requests} syncs in ${fmt(seconds, 2)} s; per sync p50 ${ms(tenth(0).p50)} in the first tenth, ${ms(tenth(9).p50)} in the last)`,
      floor: `F2 ${fmt(f2)} req/s (${conns(CONNECTIONS)})`,
      ratio: `${fmt(rate / f2, 2)} × F2 (target ≥ 4 × = ${fmt(4 * f2)} msg/s)`,
      verdict: Number.isFinite(f2) ? verdict(rate >= 4 * f2) : 'n/a',
    });
    // autocannon does not count requests still in flight when a timed run ends, so a few more
    // than it counted may be queued; fewer would be a loss.
    if (total < expected) notes.push(`S4 drained only ${fmt(total)} messages; ${fmt(expected)} were answered 2xx.`);
  } catch (e) {
    failed('S4', 'backlog drain', e);
  }
}

/** `n` requests held open at once, one socket each (like long-polls), with their completion times. */
class ParkedRequests {
  readonly ends: Float64Array;
  readonly done: Promise<void>[] = [];
  readonly bodies: (SyncBody | null)[];
  failures = 0;
  open = 0;
  private readonly agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });

  constructor(readonly n: number) {
    this.ends = new Float64Array(n).fill(NaN);
    this.bodies = new Array<SyncBody | null>(n).fill(null);
  }

  async openAll(port: number, requestOf: (j: number) => { path: string; token?: string }): Promise<void> {
    for (let j = 0; j < this.n; j++) {
      const { path: reqPath, token } = requestOf(j);
      this.done.push(
        new Promise<void>((resolve) => {
          const req = http.request(
            { host: '127.0.0.1', port, path: reqPath, headers: token ? { authorization: `Bearer ${token}` } : {}, agent: this.agent },
            (res) => {
              const chunks: Buffer[] = [];
              res.on('data', (ch: Buffer) => chunks.push(ch));
              res.on('end', () => {
                this.ends[j] = performance.now();
                this.open--;
                try {
                  if (res.statusCode !== 200) throw new Error(String(res.statusCode));
                  this.bodies[j] = JSON.parse(Buffer.concat(chunks).toString('utf8')) as SyncBody;
                } catch {
                  this.failures++;
                }
                resolve();
              });
            },
          );
          req.on('error', () => {
            this.failures++;
            this.open--;
            resolve();
          });
          req.end();
          this.open++;
        }),
      );
      // Pace the connects so the listen backlog never overflows (an overflow costs a 1 s SYN retry).
      if (j % 250 === 249) await sleep(30);
    }
  }

  close(): void {
    this.agent.destroy();
  }
}

/** The memory floor for S5: the bare Hono server (F1) holding `n` parked requests. */
async function parkFloor(f1: Server, n: number): Promise<{ idleKb: number; parkedKb: number } | null> {
  const parked = new ParkedRequests(n);
  try {
    await waitIdle(f1.pid);
    const idleKb = procStatusKb(f1.pid, 'VmRSS');
    await parked.openAll(f1.port, () => ({ path: '/park' }));
    await waitIdle(f1.pid);
    await sleep(500);
    const parkedKb = procStatusKb(f1.pid, 'VmRSS');
    const c = new HttpClient('127.0.0.1', f1.port, 1);
    await c.ok('POST', '/release');
    c.close();
    await Promise.race([Promise.all(parked.done), sleep(20_000)]);
    return { idleKb, parkedKb };
  } finally {
    parked.close();
  }
}

async function s5(server: Server, c: HttpClient, sender: Device, devices: Device[], fl: Floors): Promise<void> {
  const n = S5_CONNECTIONS;
  const d = devices.length;
  const perDevice = n / d;
  log(`S5: ${n} concurrent long-polls over ${d} devices; RSS, then wake latency`);
  const parked = new ParkedRequests(n);
  try {
    await waitIdle(server.pid);
    const rssIdle = procStatusKb(server.pid, 'VmRSS');
    // Poll j belongs to device j % d.
    await parked.openAll(server.port, (j) => {
      const dev = devices[j % d]!;
      return { path: syncPath(dev.since, 120_000), token: dev.token };
    });
    await waitIdle(server.pid);
    await sleep(500);
    const rss = procStatusKb(server.pid, 'VmRSS');
    const early = parked.ends.filter((t) => !Number.isNaN(t)).length;
    log(`  S5: ${parked.open} long-polls open; server RSS ${fmt(mb(rss))} MB (idle before: ${fmt(mb(rssIdle))} MB)`);

    // Wake: one message per device, in random order, 4 devices at a time; a device's slot is
    // free again once all its polls have returned, so the wake-ups never queue up unboundedly.
    const sentAt = new Float64Array(d).fill(NaN);
    const pollsOf = (idx: number): Promise<void>[] => {
      const list: Promise<void>[] = [];
      for (let j = idx; j < n; j += d) list.push(parked.done[j]!);
      return list;
    };
    const order = [...devices.keys()].sort(() => Math.random() - 0.5);
    const t0 = performance.now();
    await pool(d, 4, async (k) => {
      const idx = order[k]!;
      const dev = devices[idx]!;
      sentAt[idx] = performance.now();
      await c.ok('PUT', sendPath('m.bench.wake'), { token: sender.token, body: { messages: { [dev.userId]: { [dev.deviceId]: { wake: idx } } } } });
      await Promise.race([Promise.all(pollsOf(idx)), sleep(30_000)]);
    });
    const wakeSeconds = (performance.now() - t0) / 1000;
    const latencies: number[] = [];
    let empty = 0;
    for (let j = 0; j < n; j++) {
      const end = parked.ends[j]!;
      const sent = sentAt[j % d]!;
      if (Number.isNaN(end) || Number.isNaN(sent)) continue;
      if ((parked.bodies[j]?.to_device.events.length ?? 0) === 0) empty++;
      else latencies.push(end - sent);
    }
    const s = summarize(latencies);
    const scenario = `${fmt(n)} concurrent long-polling /sync (${fmt(d)} devices × ${fmt(perDevice, perDevice % 1 ? 1 : 0)})`;
    const floor = fl.parkedRss
      ? `F1 with ${fmt(n)} parked requests ${fmt(mb(fl.parkedRss.parkedKb))} MB (idle ${fmt(mb(fl.parkedRss.idleKb))} MB)`
      : '—';
    rows.push({
      id: 'S5',
      scenario: `${scenario}: server RSS`,
      figure: `${fmt(mb(rss))} MB (idle before: ${fmt(mb(rssIdle))} MB; +${fmt((rss - rssIdle) / n, 1)} kB per poll)`,
      floor,
      ratio: 'target ≤ 250 MB',
      verdict: verdict(mb(rss) <= 250),
    });
    rows.push({
      id: 'S5',
      scenario: `${scenario}: wake latency, one message per device, 4 devices at a time (n=${s.n})`,
      figure: `p50 ${ms(s.p50)}, p99 ${ms(s.p99)} (max ${ms(s.max)}); ${fmt(s.n / wakeSeconds)} wakes/s`,
      floor: fl.f2.serial ? `F2 serial PUT p99 ${ms(fl.f2.serial.p99)}` : '—',
      ratio: 'target p99 ≤ 50 ms',
      verdict: verdict(s.p99 <= 50 && s.n === n),
    });
    if (s.n !== n) notes.push(`S5: ${fmt(n - s.n)} of ${fmt(n)} polls not woken with their message (${early} returned before the wake phase, ${empty} empty, ${parked.failures} failed).`);
    if (perDevice > 1) {
      notes.push(
        `S5 parks ${fmt(n)} long-polls on ${fmt(d)} devices (${fmt(perDevice, 1)} per device): each device needs a login, i.e. one scrypt on the server, ` +
          `which would make ${fmt(n)} distinct devices take ~${fmt(loginCount > 0 ? (n * loginSeconds) / loginCount / 60 : NaN, 0)} min here; one message then wakes all of a device's polls. BENCH_S5_DEVICES=${n} measures one device per poll.`,
      );
    }
  } catch (e) {
    failed('S5', 'long-polls', e);
  } finally {
    parked.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Databases

let admin: postgres.Sql | null = null;
function adminSql(): postgres.Sql {
  admin ??= postgres(ADMIN_URL, { max: 1, onnotice: () => {}, connect_timeout: 10 });
  return admin;
}

async function createDatabase(name: string): Promise<string> {
  await adminSql().unsafe(`create database ${name}`);
  cleanups.push(() => dropDatabase(name));
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

/**
 * Waits (up to AUTOVACUUM_WAIT_MS) until no autovacuum worker runs in database `name`, so a
 * latency row is not measured beside the vacuum of what the row before it inserted or deleted;
 * the wait goes into the notes.
 */
async function autovacuumQuiet(name: string, before: string): Promise<void> {
  const t0 = performance.now();
  const busy = async () => (await adminSql()`select count(*)::int as n from pg_stat_activity where backend_type = 'autovacuum worker' and datname = ${name}`)[0]!.n as number;
  let seen = false;
  while ((await busy()) > 0 && performance.now() - t0 < AUTOVACUUM_WAIT_MS) {
    seen = true;
    await sleep(250);
  }
  if (!seen) return;
  const waited = (performance.now() - t0) / 1000;
  notes.push(
    waited * 1000 >= AUTOVACUUM_WAIT_MS
      ? `${before}: autovacuum was still running on the product's database after ${fmt(waited, 1)} s; measured anyway.`
      : `${before}: waited ${fmt(waited, 1)} s for autovacuum to finish on the product's database before measuring.`,
  );
}

async function dropDatabase(name: string): Promise<void> {
  await adminSql().unsafe(`drop database if exists ${name} with (force)`);
}

// ---------------------------------------------------------------------------------------------
// The product runs

async function productOnPostgres(fl: Floors): Promise<void> {
  const dbName = `tds_bench_${randomBytes(4).toString('hex')}`;
  const url = await createDatabase(dbName);
  log(`product on PostgreSQL (database ${dbName})`);
  const server = await startProduct('product-pg', { url }, true);
  const c = new HttpClient('127.0.0.1', server.port, 64);
  try {
    const alice = await register(c, 'alice');
    const bob = await register(c, 'bob', 'BOBDEV');

    let sent = 0;
    // S6 and S7 are judged against S1 at CONNECTIONS, so a subset with them measures that.
    if (want('S1')) sent += await s1('PostgreSQL', server, alice, bob, fl, SCALE_CONNECTIONS);
    else if (want('S6') || want('S7')) sent += await s1('PostgreSQL', server, alice, bob, fl, [CONNECTIONS]);
    if (want('S4')) {
      if (sent < S4_BACKLOG) {
        // One message per request (a request holds one message per (user, device)), so the fill
        // runs at S1's rate; it is done in chunks and cut off after S4_FILL_MAX_MS.
        log(`S4: filling the backlog to ${S4_BACKLOG.toLocaleString('en-US')} (${(S4_BACKLOG - sent).toLocaleString('en-US')} more requests)`);
        const t0 = performance.now();
        let filled = 0;
        while (sent < S4_BACKLOG && performance.now() - t0 < S4_FILL_MAX_MS) {
          const amount = Math.max(CONNECTIONS, Math.min(10_000, S4_BACKLOG - sent));
          const fill = await runLoad(loadSpec(server.port, `${CLIENT}/sendToDevice/m.bench`, alice.token, s1Body(bob), { warmupSeconds: 0, amount }));
          sent += fill.ok2xx;
          filled += fill.ok2xx;
        }
        const seconds = (performance.now() - t0) / 1000;
        notes.push(`S4 backlog: ${fmt(sent)} messages, from S1 and then ${fmt(filled)} more requests at ${fmt(filled / seconds)} req/s in ${fmt(seconds, 1)} s.`);
        if (sent < S4_BACKLOG) notes.push(`S4 backlog fill was cut off after ${fmt(S4_FILL_MAX_MS / 1000)} s: drained ${fmt(sent)}, not ${fmt(S4_BACKLOG)}.`);
      }
      await s4(c, bob, sent, fl);
    }
    if (want('S2')) {
      // S4 just deleted its whole backlog (and S1 inserted it): PostgreSQL's autovacuum then
      // works on those tables for a while, on the same two cores as the latency measured next.
      await autovacuumQuiet(dbName, 'S2');
      await s2('PostgreSQL', c, alice, S2_ROUNDS, fl);
    }

    let carol: Device[] = [];
    if (want('S3') || want('S5')) {
      const t0 = performance.now();
      carol = await userWithDevices(c, 'carol', S3_DEVICES);
      loginSeconds += (performance.now() - t0) / 1000;
      loginCount += S3_DEVICES;
      notes.push(`Setup: 1 registration + ${S3_DEVICES - 1} logins of one user took ${fmt((performance.now() - t0) / 1000, 1)} s (scrypt per login).`);
    }
    if (want('S3')) await s3(c, alice, carol, fl, true);
    if (want('S5')) {
      const devices = carol.slice(0, S5_DEVICES);
      if (devices.length < S5_DEVICES) {
        const t0 = performance.now();
        const extra = S5_DEVICES - devices.length;
        for (let u = 0; devices.length < S5_DEVICES; u++) {
          devices.push(...(await userWithDevices(c, `dave${u}`, Math.min(1000, S5_DEVICES - devices.length))));
        }
        loginSeconds += (performance.now() - t0) / 1000;
        loginCount += extra;
        notes.push(`Setup: ${fmt(extra)} more devices for S5 took ${fmt((performance.now() - t0) / 1000, 1)} s.`);
      }
      await drainAll(c, devices);
      await s5(server, c, alice, devices, fl);
    }
    // After S5: its RSS must not be read from a heap that has just expanded a 5,000-device "*".
    if (want('S3') && S3_SCALE_DEVICES.length > 0) {
      for (const [k, n] of S3_SCALE_DEVICES.entries()) {
        const t0 = performance.now();
        const fanout = await userWithInsertedDevices(c, url, `erin${k}`, n);
        const setupSeconds = (performance.now() - t0) / 1000;
        log(`  S3: a user with ${fmt(n)} devices set up in ${fmt(setupSeconds, 1)} s (1 registration, ${fmt(n - 1)} devices inserted)`);
        await s3(c, alice, fanout, fl, false);
      }
      notes.push(
        `S3 at ${S3_SCALE_DEVICES.map((n) => fmt(n)).join(' and ')} devices (scaling rows, no target): each user is 1 registration, its other devices and their access tokens ` +
          'inserted straight into the product\'s `devices` table by this orchestrator before the timed part (a login costs one scrypt; ' +
          `${loginCount > 0 ? `${fmt((1000 * loginSeconds) / loginCount, 0)} s per 1,000 here` : 'about 53 s per 1,000 here'}). ` +
          'The 1,000-device row is logged in through the API as before. These rows run after S5, on PostgreSQL only: on PGlite the database is inside the server process.',
      );
    }
  } finally {
    c.close();
    await stopServer(server);
    await dropDatabase(dbName);
  }
}

// ---------------------------------------------------------------------------------------------
// PGB and LB: S1 through PgBouncer, and S1 on two processes behind HAProxy (issue 31)

const HA_SCRIPTS = path.join(ROOT, 'test/support/ha');
const installed = (name: string): boolean =>
  (process.env.PATH ?? '').split(':').some((d) => existsSync(path.join(d, name))) || existsSync(path.join('/usr/sbin', name));

/** Runs test/support/ha/<script> <command> with `env`. */
function haScript(script: 'pgbouncer.sh' | 'haproxy.sh', command: 'start' | 'stop', env: Record<string, string>): void {
  execFileSync(path.join(HA_SCRIPTS, script), [command], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'], timeout: 60_000 });
}

/** S1 at CONNECTIONS against `port`; null (and a failed row) when the run fails. */
async function s1Run(id: string, scenario: string, port: number, sender: Device, target: Device): Promise<LoadResult | null> {
  log(`${id}: ${scenario}, ${conns(CONNECTIONS)}, ${SECONDS} s`);
  try {
    return await runLoad(loadSpec(port, `${CLIENT}/sendToDevice/m.bench`, sender.token, s1Body(target)));
  } catch (e) {
    failed(id, scenario, e);
    return null;
  }
}

const s1Figure = (r: LoadResult): string =>
  `${fmt(r.reqPerSec)} req/s; p50 ${ms(r.p50)}, p99 ${ms(r.p99)}${r.non2xx + r.errors > 0 ? ` (${fmt(r.non2xx + r.errors)} failed!)` : ''}`;

/**
 * S1 on one PostgreSQL database measured three ways in one run: one process directly (the
 * reference), one process through PgBouncer in transaction mode (prepared statements off,
 * `listen_url` direct: docs/topologies.md), and one then two processes behind HAProxy (round
 * robin, as test/support/ha/haproxy.sh configures it). No targets: PgBouncer's row is a ratio
 * to direct, the two-process row is scaling on this machine.
 */
async function poolerAndBalancer(): Promise<void> {
  const pgbMissing = want('PGB') && !installed('pgbouncer');
  const lbMissing = want('LB') && !installed('haproxy');
  if (pgbMissing) rows.push({ id: 'PGB', scenario: 'S1 through PgBouncer (transaction mode)', figure: 'skipped: pgbouncer not installed (apt-get install pgbouncer)', floor: '—', ratio: '—', verdict: 'n/a' });
  if (lbMissing) rows.push({ id: 'LB', scenario: 'S1 on 2 processes behind HAProxy', figure: 'skipped: haproxy not installed (apt-get install haproxy)', floor: '—', ratio: '—', verdict: 'n/a' });
  const doPgb = want('PGB') && !pgbMissing;
  const doLb = want('LB') && !lbMissing;
  if (!doPgb && !doLb) return;

  const dbName = `tds_bench_${randomBytes(4).toString('hex')}`;
  const url = await createDatabase(dbName);
  const direct = new URL(url);
  log(`PGB/LB: product on PostgreSQL (database ${dbName})`);
  const servers: Server[] = [];
  const start = async (name: string, dbUrl: string, env: Record<string, string> = {}): Promise<Server> => {
    const s = await startProduct(name, { url: dbUrl }, false, env);
    servers.push(s);
    return s;
  };
  const stopAll = async (): Promise<void> => {
    for (const s of servers.splice(0)) await stopServer(s);
  };
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'tds-bench-ha-'));
  // PgBouncer runs as postgres when we are root (pgbouncer.sh): a directory of its own, which the script hands to it.
  const pgbDir = mkdtempSync(path.join(os.tmpdir(), 'tds-bench-pgb-'));
  const pgbEnv = { PGB_DIR: pgbDir, PGB_PORT: '', PGB_TARGET_HOST: direct.hostname, PGB_TARGET_PORT: direct.port || '5432' };
  const hapEnv = { HAP_DIR: path.join(scratch, 'haproxy'), HAP_PORT: '', HAP_BACKENDS: '' };
  cleanups.push(() => {
    if (pgbEnv.PGB_PORT !== '') haScript('pgbouncer.sh', 'stop', pgbEnv);
    if (hapEnv.HAP_PORT !== '') haScript('haproxy.sh', 'stop', hapEnv);
    rmSync(scratch, { recursive: true, force: true });
    rmSync(pgbDir, { recursive: true, force: true });
  });
  try {
    const one = await start('product-direct', url);
    const c = new HttpClient('127.0.0.1', one.port, 4);
    const alice = await register(c, 'alice');
    const bob = await register(c, 'bob', 'BOBDEV');
    c.close();
    const ref = await s1Run(doPgb ? 'PGB' : 'LB', 'S1 on 1 process, PostgreSQL directly (reference)', one.port, alice, bob);
    if (ref === null) return;
    const refNote = `S1 direct ${fmt(ref.reqPerSec)} req/s`;

    if (doPgb) {
      try {
        pgbEnv.PGB_PORT = String(await freePort());
        haScript('pgbouncer.sh', 'start', pgbEnv);
        await stopAll();
        const pooled = new URL(url);
        pooled.port = pgbEnv.PGB_PORT;
        const p = await start('product-pgbouncer', pooled.toString(), { DATABASE_LISTEN_URL: url, DATABASE_PREPARED_STATEMENTS: 'false' });
        const r = await s1Run('PGB', 'S1 through PgBouncer, transaction mode', p.port, alice, bob);
        if (r !== null) {
          rows.push({
            id: 'PGB',
            scenario: `sendToDevice to one device through PgBouncer (transaction mode, prepared statements off, listen_url direct), 1 process, ${conns(CONNECTIONS)}`,
            figure: s1Figure(r),
            floor: `${refNote} (prepared statements on), p50 ${ms(ref.p50)}`,
            ratio: `${fmt(r.reqPerSec / ref.reqPerSec, 2)} × S1 direct (no target)`,
            verdict: 'info',
          });
        }
      } catch (e) {
        failed('PGB', 'S1 through PgBouncer', e);
      } finally {
        await stopAll();
        haScript('pgbouncer.sh', 'stop', pgbEnv);
        pgbEnv.PGB_PORT = '';
      }
    }

    if (doLb) {
      await stopAll();
      const a = await start('product-lb-1', url);
      const b = await start('product-lb-2', url);
      const runBehind = async (backends: Server[]): Promise<LoadResult | null> => {
        hapEnv.HAP_PORT = String(await freePort());
        hapEnv.HAP_BACKENDS = backends.map((s) => `127.0.0.1:${s.port}`).join(',');
        haScript('haproxy.sh', 'start', hapEnv);
        try {
          await waitReady('haproxy', a.proc, Number(hapEnv.HAP_PORT), '/health/ready', a.logFile);
          return await s1Run('LB', `S1 on ${backends.length} process${backends.length === 1 ? '' : 'es'} behind HAProxy`, Number(hapEnv.HAP_PORT), alice, bob);
        } finally {
          haScript('haproxy.sh', 'stop', hapEnv);
          hapEnv.HAP_PORT = '';
        }
      };
      notes.push(
        'PGB and LB: S1 (one sender, one recipient device, fresh txnIds) on a database of their own, against S1 on one process directly measured just before them. ' +
          `LB: HAProxy (test/support/ha/haproxy.sh, round robin) in front of 1, then 2 product processes; on ${os.cpus().length} cores the processes, HAProxy, PostgreSQL and the load generator share the CPUs, so the two-process row shows scaling, not a target.`,
      );
      const single = await runBehind([a]);
      const pair = await runBehind([a, b]);
      if (single !== null) {
        rows.push({
          id: 'LB',
          scenario: `sendToDevice to one device, 1 process behind HAProxy (round robin), ${conns(CONNECTIONS)}`,
          figure: s1Figure(single),
          floor: refNote,
          ratio: `${fmt(single.reqPerSec / ref.reqPerSec, 2)} × S1 direct (HAProxy's cost, no target)`,
          verdict: 'info',
          rank: 1,
        });
      }
      if (pair !== null) {
        const base = single ?? ref;
        rows.push({
          id: 'LB',
          scenario: `sendToDevice to one device, 2 processes behind HAProxy (round robin), ${conns(CONNECTIONS)}`,
          figure: s1Figure(pair),
          floor: single !== null ? `1 process behind HAProxy ${fmt(single.reqPerSec)} req/s` : refNote,
          ratio: `${fmt(pair.reqPerSec / base.reqPerSec, 2)} × 1 process (scaling, no target)`,
          verdict: 'info',
          rank: 2,
        });
      }
    }
  } finally {
    await stopAll();
    await dropDatabase(dbName);
  }
}

async function productOnPglite(fl: Floors): Promise<void> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'tds-bench-pglite-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  log(`product on PGlite (${dataDir})`);
  const server = await startProduct('product-pglite', { dataDir }, false);
  const c = new HttpClient('127.0.0.1', server.port, 64);
  try {
    await m1(server, fl);
    const alice = await register(c, 'alice');
    const bob = await register(c, 'bob', 'BOBDEV');
    await s1('PGlite', server, alice, bob, fl, SCALE_CONNECTIONS);
    await s2('PGlite', c, alice, 1000, fl);
  } finally {
    c.close();
    await stopServer(server);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * M1: the product as `npm start` leaves it on a fresh PGlite directory, idle, before any request:
 * what a newcomer sees in `top`. Judged against F4, PGlite opened bare in its own process, in the
 * same run. The target is what the embedded default reaches now (its cluster created in a child
 * process, see src/storage/drivers/pglite-init.ts); opening PGlite in-process as F4 does measured ~1.1 × F4.
 */
async function m1(server: Server, fl: Floors): Promise<void> {
  await waitIdle(server.pid);
  const rss = procStatusKb(server.pid, 'VmRSS');
  const ratio = rss / (fl.pgliteIdleKb ?? NaN);
  rows.push({
    id: 'M1',
    scenario: 'the product on a fresh PGlite directory (npm start\'s first start), idle: RSS',
    figure: `${fmt(mb(rss))} MB`,
    floor: fl.pgliteIdleKb === null ? '—' : `F4 ${fmt(mb(fl.pgliteIdleKb))} MB`,
    ratio: `${fmt(ratio, 2)} × F4 (target ≤ ${M1_TARGET})`,
    verdict: verdict(ratio <= M1_TARGET),
  });
}

/** What the scenarios in files of their own (S6, S7) use of this orchestrator. */
function benchContext(fl: Floors): BenchContext {
  return {
    log,
    freePort,
    createDatabase,
    dropDatabase,
    spawnNode,
    waitReady,
    runLoad,
    stopServer,
    productScript: PRODUCT_SCRIPT,
    productNodeArgs,
    scratchDir: logDir,
    notes,
    references: { s1PostgresReqPerSec, f2SerialP50Ms: fl.f2.serial?.p50 ?? null, f2ReqPerSec: fl.f2.byConnections.get(CONNECTIONS)?.reqPerSec ?? null },
  };
}

// ---------------------------------------------------------------------------------------------
// Report

/**
 * Which code was measured: the commit, and whether the work tree differed from it (RESULTS.md,
 * which the run itself rewrites, aside), so a reader can tell a run on committed code.
 */
function codeVersion(): string {
  // Not trimmed: porcelain lines start with a status column that may be a space.
  const git = (...args: string[]): string => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const commit = git('rev-parse', '--short', 'HEAD').trim();
    const branch = git('rev-parse', '--abbrev-ref', 'HEAD').trim();
    const results = path.relative(ROOT, path.join(BENCH_DIR, 'RESULTS.md'));
    const changed = git('status', '--porcelain', '--untracked-files=all')
      .split('\n')
      .filter(Boolean)
      .map((line) => line.slice(3))
      .filter((file) => file !== results);
    const tree =
      changed.length === 0
        ? 'work tree clean (test/bench/RESULTS.md, which the run writes, aside): a run on committed code'
        : `work tree dirty, ${changed.length} changed or untracked file${changed.length === 1 ? '' : 's'} (${changed.slice(0, 5).join(', ')}${changed.length > 5 ? ', …' : ''}): not a run on committed code`;
    return `- Code: commit ${commit} (${branch}), ${tree}`;
  } catch (e) {
    return `- Code: unknown (git failed: ${e instanceof Error ? e.message.split('\n')[0] : String(e)})`;
  }
}

async function machine(): Promise<string[]> {
  let pg: string;
  try {
    const [row] = await adminSql()<{ server_version: string }[]>`show server_version`;
    pg = row?.server_version ?? '?';
  } catch (e) {
    pg = `unreachable (${e instanceof Error ? e.message : String(e)})`;
  }
  const cpus = os.cpus();
  return [
    `- Date: ${new Date().toISOString()}`,
    codeVersion(),
    `- Machine: ${cpus.length} cores (${cpus[0]?.model.trim() ?? '?'}), ${fmt(os.totalmem() / 2 ** 30, 1)} GiB memory, ${os.type()} ${os.release()}`,
    `- Load average at start: ${os.loadavg().map((l) => l.toFixed(2)).join(', ')} (other work on the machine skews every figure)`,
    `- Node ${process.version}; PostgreSQL ${pg} on loopback; autocannon ${CONNECTIONS} connections, ${WARMUP_SECONDS} s warm-up + ${SECONDS} s measured; ` +
      `scaling rows at ${SCALE_CONNECTIONS.filter((n) => n !== CONNECTIONS).join(', ')} connections: ${WARMUP_SECONDS} s warm-up + ${SCALE_SECONDS} s measured`,
  ];
}

/** Rows grouped by id in the order of ORDER, by rank within an id, else as measured. */
const ORDER = ['F1', 'F2', 'F3', 'F4', 'F5', 'M1', 'S1', 'PGB', 'LB', 'S2', 'S3', 'S4', 'S5', 'S6', 'S7', 'K1', 'K2', 'KIT'];

function table(): string[] {
  const head = '| # | scenario | figure | floor | ratio / target | result |';
  const sep = '|---|---|---|---|---|---|';
  const group = (r: Row): number => (ORDER.includes(r.id) ? ORDER.indexOf(r.id) : ORDER.length);
  const sorted = [...rows].sort((a, b) => group(a) - group(b) || (a.rank ?? 0) - (b.rank ?? 0));
  return [head, sep, ...sorted.map((r) => `| ${r.id} | ${r.scenario} | ${r.figure} | ${r.floor} | ${r.ratio} | ${r.verdict} |`)];
}

async function main(): Promise<void> {
  const started = performance.now();
  const watchdog = setTimeout(() => {
    log('watchdog: the bench ran too long; stopping');
    void cleanup().then(() => process.exit(0));
  }, WATCHDOG_MS);
  watchdog.unref();

  const header = await machine();
  if (['S1', 'S2', 'S3', 'S4', 'S5', 'S6', 'S7', 'K1', 'K2', 'PGLITE', 'PGB', 'LB', 'KIT'].some(want)) buildProduct();
  const fl = await floors();
  if (['S1', 'S2', 'S3', 'S4', 'S5', 'S6', 'S7'].some(want)) {
    try {
      await productOnPostgres(fl);
    } catch (e) {
      failed('S*', 'product on PostgreSQL', e);
    }
  }
  if (want('PGB') || want('LB')) {
    try {
      await poolerAndBalancer();
    } catch (e) {
      failed(want('PGB') ? 'PGB' : 'LB', 'S1 through PgBouncer / behind HAProxy', e);
    }
  }
  if (want('PGLITE')) {
    try {
      await productOnPglite(fl);
    } catch (e) {
      failed('S*', 'product on PGlite', e);
    }
  }
  if (want('S6')) rows.push(...(await federationScenario(benchContext(fl))));
  if (want('S7')) rows.push(...(await appserviceScenario(benchContext(fl))));
  if (want('K1') || want('K2')) rows.push(...(await keysScenario(benchContext(fl), { claim: want('K1'), query: want('K2') })));
  if (want('KIT')) {
    try {
      rows.push(...kitScenario(fmt));
    } catch (e) {
      failed('KIT', 'module test kit', e);
    }
  }

  const minutes = (performance.now() - started) / 60_000;
  const out = [
    '# Benchmark results',
    '',
    'Produced by `npm run bench` (test/bench/run.ts); targets from issues 7 and 18. A benchmark, not a test.',
    '',
    ...header,
    `- Whole run: ${fmt(minutes, 1)} min${ONLY.size > 0 ? `; only ${[...ONLY].join(', ')}` : ''}`,
    '',
    ...table(),
    '',
    ...(notes.length > 0 ? ['Notes:', '', ...notes.map((n) => `- ${n}`), ''] : []),
    `Method: each server runs in its own process: the floors under \`node --import tsx\`, the product as built by \`npm run build\` and started as \`npm run start:prod\` does (\`node dist/src/main.js\`, node flags: ${startScriptNodeArgs().join(' ') || 'none'}); ` +
      'the load generator (autocannon) in another, ' +
      'also for S6\'s and S7\'s streams of sends; this orchestrator is the client for S2–S5, S6\'s latency and the streams\' receiving devices. F3 opens PGlite as the product\'s default does (src/storage/drivers/pglite-durable.ts: fsync on every commit), ' +
      'so F3 and S1 on PGlite pay the same durability. ' +
      `F4 is F1 with a bare PGlite (default options) opened on a fresh directory, M1 the product started on a fresh directory; both read VmRSS from /proc once idle, before any request; M1 ≤ ${M1_TARGET} × F4 (issue 30). ` +
      `S1 sends to one device with a fresh txnId per request, at ${SCALE_CONNECTIONS.join(', ')} connections, each compared with its floor (F2 on PostgreSQL, F3 on PGlite) at the same concurrency and judged at ${CONNECTIONS} and at 1 (the others show the scaling); at 1 connection against a fresh floor server measured in turns with the product (both first warmed for ${PAIRED_WARMUP_SECONDS} s at ${CONNECTIONS} connections; then floor, product, product, floor, floor, product; ${PAIRED_SECONDS} s each after a 2 s warm-up; the median run of each), since one client's serial requests are the most sensitive to this shared machine's drift; ` +
      (SCALE_SECONDS < SECONDS ? `the runs at other concurrencies than ${CONNECTIONS} are measured for ${SCALE_SECONDS} s instead of ${SECONDS} s to keep the whole run short; ` : '') +
      "all of S1's sends stay queued for S4. " +
      'Targets from issue 18 are ratios to figures of the same run: S1 ≥ 0.75 × its floor (≥ 0.6 × at 1 connection, issue 30); S2 p50 ≤ 3 × the serial p50 of its floor (F2, or F3 on PGlite; p99 ≤ 15 ms kept); ' +
      `S4 ≥ 4 × F2's req/s (${CONNECTIONS} connections) in msg/s; S6's stream ≥ 0.4 × and S7's ≥ 0.5 × S1 on PostgreSQL at ${CONNECTIONS} connections; ` +
      'S6\'s latency p50 ≤ 12 × F2\'s serial p50 (issue 7\'s absolute 10 ms made a ratio: 12 × the 0.79 ms of the run it was set against ≈ 10 ms). S2 parks a ' +
      '`/sync` long-poll, then sends `org.example.ping` to the server user and times until that long-poll returns the ' +
      'pong (on PostgreSQL once no autovacuum worker runs on the product\'s database: S4 deleted its backlog just before); S3 drains every device between requests (the 1,000 devices are logged in; at other counts they are inserted into the database, see notes); S4 fills the queue with S1 and further requests, then drains ' +
      'with `since`; S5 reads VmRSS from /proc after the long-polls are parked and the server is idle, then sends ' +
      'one message per device, four devices at a time (the next once all polls of one have returned), timing each poll ' +
      'from its message\'s send. S6 runs two servers, each on its own database, federating over loopback HTTP ' +
      '(static routes), and times A\'s sendToDevice to B\'s woken long-poll serially, then a stream of sends from A ' +
      'until B\'s long-polling devices have them all; S7 sends to users of a matrix-bot-sdk appservice (its own ' +
      'process) until it has received them all. Latencies are measured by this client and include its own overhead.',
    '',
  ];
  console.log(`\n${out.join('\n')}`);
  if (ONLY.size === 0) writeFileSync(path.join(BENCH_DIR, 'RESULTS.md'), out.join('\n'));
  else log('BENCH_ONLY set: RESULTS.md left as it was');
}

async function cleanup(): Promise<void> {
  for (const child of children) child.kill('SIGKILL');
  for (const fn of cleanups.reverse()) {
    try {
      await fn();
    } catch {
      // best effort
    }
  }
  cleanups.length = 0;
  await admin?.end({ timeout: 1 });
  admin = null;
  if (process.env.BENCH_KEEP_LOGS) log(`server logs kept in ${logDir}`);
  else rmSync(logDir, { recursive: true, force: true });
}

process.once('SIGINT', () => {
  log('interrupted');
  void cleanup().then(() => process.exit(130));
});

main()
  .catch((e: unknown) => {
    log(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  })
  .finally(() => {
    void cleanup().then(() => process.exit(0));
  });
