import { parseArgs } from 'node:util';
import type { Config } from '../config/config.ts';
import { MatrixError } from '../errors/matrix-error.ts';
import { createLogger, type Logger } from '../logger.ts';
import { formatUserId } from '../shared/user-id.ts';
import { ServerUserDispatcher, type HandlerToLoad } from '../server-user/dispatcher.ts';
import { loadHandlerModules } from '../server-user/loader.ts';
import { systemClock } from '../server-user/system-clock.ts';
import { AccountsService } from '../services/accounts.ts';
import { Counters } from '../metrics/counters.ts';
import { Notifier } from '../runtime/notifier.ts';
import { hashPassword } from '../crypto/passwords.ts';
import { PgWakeups } from '../runtime/pg-wakeups.ts';
import { newInstanceId } from '../runtime/queue-lease.ts';
import type { Database } from '../storage/drivers/database.ts';
import { OperationsStore, type QueueState } from '../storage/operations-store.ts';
import { AdminStore } from './admin-store.ts';

export const USAGE = `Usage: npm run admin -- <command> [options]

Commands:
  create-user <localpart> (--password <pw> | --password-stdin)
  reset-password <user> (--password <pw> | --password-stdin) [--logout-devices]
  devices <user>                      the user's devices and their queue depths
  delete-device <user> <device_id>    delete a device, its token and its queued messages
  handlers [--metrics-url <url>]      handler modules, their event types and dispatch counters
  queues                              device queue totals, federation and appservice queues

<user> is a full user ID (@alice:example.org) or a localpart (alice).
Options: --json  print JSON instead of text
`;

export interface AdminContext {
  config: Config;
  database: Database;
  out(text: string): void;
  err(text: string): void;
  /** Reads all of standard input (for --password-stdin). */
  readStdin?(): Promise<string>;
  /** Handler modules; by default those of the config, imported. */
  handlers?: readonly HandlerToLoad[];
}

class UsageError extends Error {}

/** Runs one admin command; returns the process exit code (0 ok, 1 failed, 2 bad usage). */
export async function runAdmin(argv: readonly string[], ctx: AdminContext): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        json: { type: 'boolean', default: false },
        password: { type: 'string' },
        'password-stdin': { type: 'boolean', default: false },
        'logout-devices': { type: 'boolean', default: false },
        'metrics-url': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    ctx.err(`${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values: opts, positionals } = parsed;
  const [command, ...args] = positionals;
  if (opts.help || command === undefined || command === 'help') {
    ctx.out(USAGE);
    return command === undefined && !opts.help ? 2 : 0;
  }
  const log = createLogger('silent');
  const wakeups = ctx.database.pg === null ? null : new PgWakeups(ctx.database.pg, new Notifier(), log, newInstanceId());
  const accounts = new AccountsService(ctx.database.db, ctx.config.serverName);
  // Other server processes drop revoked tokens from their caches at once (PostgreSQL NOTIFY).
  if (wakeups !== null) accounts.publishRevoked = (hashes) => wakeups.publishRevoked(hashes);
  const ops = new OperationsStore(ctx.database.db);
  const print = (json: unknown, text: () => string) => ctx.out(opts.json ? `${JSON.stringify(json, null, 2)}\n` : text());
  const arity = (n: number) => {
    if (args.length !== n) throw new UsageError(`${command} takes ${n} argument${n === 1 ? '' : 's'}`);
  };
  const userIdOf = (raw: string) => (raw.startsWith('@') ? raw : formatUserId(raw, ctx.config.serverName));
  const password = async (): Promise<string> => {
    if (opts.password !== undefined && opts['password-stdin']) throw new UsageError('give --password or --password-stdin, not both');
    let pw = opts.password;
    if (opts['password-stdin']) pw = (await (ctx.readStdin ?? readStdin)()).replace(/\r?\n$/, '');
    if (pw === undefined) throw new UsageError(`${command} needs --password <pw> or --password-stdin`);
    if (pw === '') throw new AdminFailure('the password must not be empty');
    return pw;
  };
  const requireUser = async (userId: string) => {
    if (userId === accounts.serverUserId) throw new AdminFailure(`${userId} is the server user (MSC4246); it has no account`);
    if (!(await accounts.userExists(userId))) throw new AdminFailure(`no such user: ${userId}`);
  };

  try {
    switch (command) {
      case 'create-user': {
        arity(1);
        const pw = await password();
        const { userId } = await accounts.register({ localpart: args[0] as string, password: pw, deviceId: null, displayName: null, inhibitLogin: true });
        print({ user_id: userId }, () => `created ${userId}\n`);
        return 0;
      }
      case 'reset-password': {
        arity(1);
        const userId = userIdOf(args[0] as string);
        const pw = await password();
        await requireUser(userId);
        await new AdminStore(ctx.database.db).setPasswordHash(userId, await hashPassword(pw));
        const devices = opts['logout-devices'] ? (await accounts.listDevices(userId)).length : 0;
        if (opts['logout-devices']) await accounts.logoutAll(userId);
        print({ user_id: userId, devices_deleted: devices }, () => `password of ${userId} reset${opts['logout-devices'] ? `; ${devices} device(s) deleted` : ''}\n`);
        return 0;
      }
      case 'devices': {
        arity(1);
        const userId = userIdOf(args[0] as string);
        await requireUser(userId);
        const devices = await ops.devicesWithQueueDepth(userId);
        print(
          { user_id: userId, devices: devices.map((d) => ({ device_id: d.deviceId, display_name: d.displayName, last_seen_ts: d.lastSeenTs, queued: d.queued })) },
          () =>
            table(
              ['device_id', 'queued', 'last_seen', 'display_name'],
              devices.map((d) => [d.deviceId, String(d.queued), d.lastSeenTs === null ? '-' : new Date(d.lastSeenTs).toISOString(), d.displayName ?? '']),
              `${userId}: no devices`,
            ),
        );
        return 0;
      }
      case 'delete-device': {
        arity(2);
        const userId = userIdOf(args[0] as string);
        const deviceId = args[1] as string;
        await requireUser(userId);
        const queued = (await ops.devicesWithQueueDepth(userId)).find((d) => d.deviceId === deviceId)?.queued;
        if (queued === undefined) throw new AdminFailure(`${userId} has no device ${deviceId}`);
        await accounts.logout({ userId, deviceId });
        print({ user_id: userId, device_id: deviceId, messages_deleted: queued }, () => `deleted device ${deviceId} of ${userId} and its ${queued} queued message(s)\n`);
        return 0;
      }
      case 'handlers': {
        arity(0);
        const dispatcher = new ServerUserDispatcher({
          handlers: ctx.handlers ?? (await loadHandlerModules(ctx.config.handlers)),
          dbFor: (schema) => ctx.database.withSchema(schema),
          clock: systemClock,
          leases: { acquire: async () => false, release: async () => {} },
          log,
          counters: new Counters(),
          serverUserId: accounts.serverUserId,
          deadlineMs: ctx.config.serverUser.dispatchDeadlineMs,
          send: () => Promise.reject(new Error('not a server')),
        });
        const url = opts['metrics-url'] ?? defaultMetricsUrl(ctx.config);
        const counts = url === null ? null : await scrapeDispatchCounts(url, log);
        const modules = dispatcher.modules.map((m) => ({
          name: m.name,
          event_types: m.eventTypes.map((type) => ({ type, ...(counts === null ? {} : { counts: counts.get(type) ?? {} }) })),
        }));
        print({ metrics_url: url, counters_available: counts !== null, modules }, () => {
          const lines = modules.map((m) => `${m.name}\n${m.event_types.map((t) => `  ${t.type}${t.counts === undefined ? '' : `  ${formatCounts(t.counts)}`}`).join('\n')}`);
          const note = counts === null ? `\n(dispatch counters unavailable: ${url === null ? 'metrics are disabled' : `no answer from ${url}`})\n` : '';
          return `${lines.join('\n')}\n${note}`;
        });
        return 0;
      }
      case 'queues': {
        arity(0);
        const [total, largest, federation, appservices] = await Promise.all([ops.deviceQueueTotal(), ops.largestDeviceQueues(5), ops.federationQueues(), ops.appserviceQueues()]);
        print(
          {
            device_queue_total: total,
            largest_device_queues: largest.map((q) => ({ user_id: q.userId, device_id: q.deviceId, queued: q.depth })),
            federation: federation.map(queueJson),
            appservices: appservices.map(queueJson),
          },
          () =>
            [
              `device queues: ${total} message(s)`,
              ...largest.map((q) => `  ${q.userId} ${q.deviceId}: ${q.depth}`),
              '',
              'federation:',
              queueTable('destination', federation),
              'appservices:',
              queueTable('appservice', appservices),
            ].join('\n'),
        );
        return 0;
      }
      default:
        throw new UsageError(`unknown command: ${command}`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      ctx.err(`${e.message}\n\n${USAGE}`);
      return 2;
    }
    if (e instanceof AdminFailure || e instanceof MatrixError) {
      ctx.err(`${command}: ${e.message}\n`);
      return 1;
    }
    throw e;
  } finally {
    // Let a pending NOTIFY (token revocations) go out before the caller closes the database.
    await new Promise((resolve) => setImmediate(resolve));
  }
}

class AdminFailure extends Error {}

function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

function defaultMetricsUrl(config: Config): string | null {
  if (!config.metrics.enabled) return null;
  const host = config.metrics.host === '0.0.0.0' ? '127.0.0.1' : config.metrics.host === '::' ? '[::1]' : config.metrics.host.includes(':') ? `[${config.metrics.host}]` : config.metrics.host;
  return `http://${host}:${config.metrics.port}/metrics`;
}

/**
 * Dispatch counters live in the running server's memory: read them from its metrics listener.
 * type → outcome → count; null when the server does not answer.
 */
async function scrapeDispatchCounts(url: string, log: Logger): Promise<Map<string, Record<string, number>> | null> {
  let text: string;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(3_000) });
    if (!res.ok) return null;
    text = await res.text();
  } catch (e) {
    log.debug('metrics scrape failed', { url, err: String(e) });
    return null;
  }
  const counts = new Map<string, Record<string, number>>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('server_user_dispatch_total{')) continue;
    const labels = Object.fromEntries([...line.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], (m[2] ?? '').replace(/\\(.)/g, (_, ch: string) => (ch === 'n' ? '\n' : ch))]));
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    const type = labels.type;
    const outcome = labels.outcome;
    if (type === undefined || outcome === undefined || !Number.isFinite(value)) continue;
    const byOutcome = counts.get(type) ?? {};
    byOutcome[outcome] = value;
    counts.set(type, byOutcome);
  }
  return counts;
}

function formatCounts(counts: Record<string, number>): string {
  const entries = Object.entries(counts);
  return entries.length === 0 ? 'no messages yet' : entries.map(([k, n]) => `${k}=${n}`).join(' ');
}

function queueJson(q: QueueState) {
  return {
    key: q.key,
    queued: q.queued,
    oldest_queued_ts: q.oldestQueuedTs,
    pending_txn: q.pendingTxn === null ? null : { txn_id: q.pendingTxn.txnId, created_ts: q.pendingTxn.createdTs, messages: q.pendingTxn.messages },
    lease: q.lease === null ? null : { holder: q.lease.holder, expires_ts: q.lease.expiresTs },
  };
}

function queueTable(keyName: string, queues: readonly QueueState[]): string {
  const age = (ts: number | null) => (ts === null ? '-' : `${Math.round((Date.now() - ts) / 1000)}s`);
  return table(
    [keyName, 'queued', 'oldest', 'pending_txn', 'sending_process'],
    queues.map((q) => [q.key, String(q.queued), age(q.oldestQueuedTs), q.pendingTxn === null ? '-' : `${q.pendingTxn.txnId} (${q.pendingTxn.messages} msgs, ${age(q.pendingTxn.createdTs)})`, q.lease?.holder ?? '-']),
    '  (none)',
  );
}

function table(header: string[], rows: string[][], empty: string): string {
  if (rows.length === 0) return `${empty}\n`;
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => `  ${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()}\n`;
  return line(header) + rows.map(line).join('');
}
