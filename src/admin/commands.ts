import type { Config } from '../config/config.ts';
import { MatrixError } from '../errors/matrix-error.ts';
import { createLogger } from '../logger.ts';
import { formatUserId } from '../shared/user-id.ts';
import { HandlerLoadError, type HandlerToLoad } from '../server-user/module-checks.ts';
import { AccountsService } from '../services/accounts.ts';
import { Notifier } from '../runtime/notifier.ts';
import { hashPassword } from '../crypto/passwords.ts';
import { PgWakeups } from '../runtime/pg-wakeups.ts';
import { newInstanceId } from '../runtime/queue-lease.ts';
import type { Database } from '../storage/drivers/database.ts';
import { OperationsStore, type QueueState } from '../storage/operations-store.ts';
import { AdminStore } from './admin-store.ts';
import { formatHandlersReport, handlersReport } from './handlers-command.ts';
import { needsDatabase, parseAdminArgs, USAGE, type AdminCommand } from './usage.ts';

export { USAGE } from './usage.ts';

export interface AdminContext {
  config: Config;
  /** Null only for a command that needs none (see needsDatabase). */
  database: Database | null;
  out(text: string): void;
  err(text: string): void;
  /** Reads all of standard input (for --password-stdin). */
  readStdin?(): Promise<string>;
  /** Handler modules; by default those of the config, imported. */
  handlers?: readonly HandlerToLoad[];
}

/** Runs one admin command; returns the process exit code (0 ok, 1 failed, 2 bad usage). */
export async function runAdmin(argv: readonly string[], ctx: AdminContext): Promise<number> {
  const parsed = parseAdminArgs(argv);
  if (parsed.kind === 'usage') {
    ctx.err(`${parsed.message}\n\n${USAGE}`);
    return 2;
  }
  if (parsed.kind === 'help') {
    ctx.out(USAGE);
    return parsed.exitCode;
  }
  return runCommand(parsed, ctx);
}

/** Runs a command whose usage parseAdminArgs accepted. */
export async function runCommand(parsed: AdminCommand, ctx: AdminContext): Promise<number> {
  const { command, args, opts } = parsed;
  const log = createLogger('silent');
  if (command === 'handlers') {
    try {
      const report = await handlersReport(ctx.config, { metricsUrl: opts.metricsUrl, log, ...(ctx.handlers === undefined ? {} : { handlers: ctx.handlers }) });
      ctx.out(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatHandlersReport(report, ctx.config));
      return 0;
    } catch (e) {
      if (!(e instanceof HandlerLoadError)) throw e;
      ctx.err(`handlers: ${e.message}\n`);
      return 1;
    }
  }
  if (ctx.database === null || !needsDatabase(command)) throw new Error(`admin ${command} needs a database`);
  const database = ctx.database;
  const wakeups = database.pg === null ? null : new PgWakeups(database.pg, new Notifier(), log, newInstanceId());
  const accounts = new AccountsService(database.db, ctx.config.serverName);
  // Other server processes drop revoked tokens from their caches at once (PostgreSQL NOTIFY).
  if (wakeups !== null) accounts.publishRevoked = (hashes) => wakeups.publishRevoked(hashes);
  const ops = new OperationsStore(database.db);
  const print = (json: unknown, text: () => string) => ctx.out(opts.json ? `${JSON.stringify(json, null, 2)}\n` : text());
  const userIdOf = (raw: string) => (raw.startsWith('@') ? raw : formatUserId(raw, ctx.config.serverName));
  const password = async (): Promise<string> => {
    // Both, or neither, was refused as usage already.
    const pw = opts.passwordStdin ? (await (ctx.readStdin ?? readStdin)()).replace(/\r?\n$/, '') : (opts.password ?? '');
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
        const pw = await password();
        const { userId } = await accounts.register({ localpart: args[0] as string, password: pw, deviceId: null, displayName: null, inhibitLogin: true });
        print({ user_id: userId }, () => `created ${userId}\n`);
        return 0;
      }
      case 'reset-password': {
        const userId = userIdOf(args[0] as string);
        const pw = await password();
        await requireUser(userId);
        await new AdminStore(database.db).setPasswordHash(userId, await hashPassword(pw));
        const devices = opts.logoutDevices ? (await accounts.listDevices(userId)).length : 0;
        if (opts.logoutDevices) await accounts.logoutAll(userId);
        print({ user_id: userId, devices_deleted: devices }, () => `password of ${userId} reset${opts.logoutDevices ? `; ${devices} device(s) deleted` : ''}\n`);
        return 0;
      }
      case 'devices': {
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
        const userId = userIdOf(args[0] as string);
        const deviceId = args[1] as string;
        await requireUser(userId);
        const queued = (await ops.devicesWithQueueDepth(userId)).find((d) => d.deviceId === deviceId)?.queued;
        if (queued === undefined) throw new AdminFailure(`${userId} has no device ${deviceId}`);
        await accounts.logout({ userId, deviceId });
        print({ user_id: userId, device_id: deviceId, messages_deleted: queued }, () => `deleted device ${deviceId} of ${userId} and its ${queued} queued message(s)\n`);
        return 0;
      }
      case 'queues': {
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
    }
  } catch (e) {
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
