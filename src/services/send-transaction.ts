import type { Db } from '../storage/drivers/database.ts';
import { DeviceInboxStore, type DeviceSelector, type RequestKey } from '../storage/device-inbox-store.ts';
import { FederationInboundStore } from '../storage/federation-inbound-store.ts';
import { SendStatement, type EnqueueRequest, type EnqueueResult } from '../storage/send-statement.ts';
import { TxnStore } from '../storage/txn-store.ts';
import type { CancelKey } from './send-plan.ts';

/** A planned send for the transaction path. */
export interface TransactionSend {
  request: EnqueueRequest;
  /** MSC3944: the cancellation key of each target (aligned with `request.targets`), or null. */
  cancels: readonly (CancelKey | null)[] | null;
}

export interface TransactionResult extends EnqueueResult {
  /** Targets (`user\u0000device`) whose cancellation was not stored, with the request it cancelled (MSC3944). */
  staleDropped: Set<string>;
  /** How many messages MSC3944 removed: those requests, and those cancellations. */
  staleCount: number;
}

/** Rows per send statement: what one round trip should carry, and how long PGlite's thread is held. */
export const MAX_STATEMENT_ROWS = 5000;

/**
 * One database transaction for sends the group-commit statement does not take: a send too heavy
 * for one statement (stored in statements of {@link MAX_STATEMENT_ROWS} rows, the event loop free
 * between them), and sends with key or secret request cancellations (MSC3944, see
 * stale-requests.ts). Claims come first, as in the send statement (so the two never wait on each
 * other in opposite orders); then the target devices of all claimed sends are locked in one
 * statement, in (user, device) order; then each send is stored by the send statement, in order,
 * each seeing the ones before it. Everything is committed together, or nothing.
 */
export async function storeInTransaction(db: Db, sends: readonly TransactionSend[]): Promise<TransactionResult[]> {
  return db.transaction(async (tx) => {
    const claimed: boolean[] = [];
    for (const { request } of sends) {
      // A refused claim wrote nothing, so the transaction goes on with the other sends.
      let ok = request.txn === null || (await new TxnStore(tx).claim(request.txn));
      if (ok && request.inbound != null) ok = await new FederationInboundStore(tx).claim(request.inbound.origin, request.inbound.messageId);
      claimed.push(ok);
    }
    const inbox = new DeviceInboxStore(tx);
    await inbox.lockTargetDevices(selectorsOf(sends.filter((_, i) => claimed[i])));
    const statement = new SendStatement(tx);
    const results: TransactionResult[] = [];
    for (const [i, send] of sends.entries()) {
      if (!claimed[i]) {
        results.push({ claimed: false, stored: [], knownUsers: new Set(), appservicesQueued: [], staleDropped: new Set(), staleCount: 0 });
        continue;
      }
      const stale = send.cancels === null ? null : await dropStaleRequests(inbox, send.request, send.cancels);
      // Watched devices' news is per send; with several sends or statements, their polls read the queue instead.
      const parts = partsOf({ ...send.request, txn: null, inbound: null, exclude: stale?.exclude ?? [] }, sends.length === 1);
      const result: TransactionResult = { claimed: true, stored: [], knownUsers: new Set(), appservicesQueued: [], staleDropped: stale?.dropped ?? new Set(), staleCount: stale?.count ?? 0 };
      for (const [p, part] of parts.entries()) {
        // On PGlite a statement runs on this thread: other requests get a turn between them.
        if (p > 0) await new Promise((resolve) => setImmediate(resolve));
        const [r] = await statement.run([part]);
        if (r === undefined) continue;
        result.stored.push(...r.stored);
        for (const u of r.knownUsers) result.knownUsers.add(u);
        result.appservicesQueued = [...new Set([...result.appservicesQueued, ...r.appservicesQueued])];
      }
      results.push(result);
    }
    return results;
  });
}

/** Which devices the sends target, per user: all of them (`*`) or the listed ones. */
function selectorsOf(sends: readonly TransactionSend[]): DeviceSelector[] {
  const selectors = new Map<string, DeviceSelector>();
  for (const { request } of sends) {
    for (const t of request.targets) {
      const current = selectors.get(t.userId);
      if (t.deviceId === '*') selectors.set(t.userId, { userId: t.userId, all: true });
      else if (current === undefined) selectors.set(t.userId, { userId: t.userId, all: false, deviceIds: [t.deviceId] });
      else if (!current.all) current.deviceIds.push(t.deviceId);
    }
  }
  return [...selectors.values()];
}

/** A send cut into statements of at most MAX_STATEMENT_ROWS targets or remote messages each. */
function partsOf(request: EnqueueRequest, watch: boolean): EnqueueRequest[] {
  const remote = request.remote ?? [];
  if (request.targets.length + remote.length <= MAX_STATEMENT_ROWS) return [{ ...request, watch: watch ? (request.watch ?? []) : [] }];
  const parts: EnqueueRequest[] = [];
  for (let i = 0; i < request.targets.length; i += MAX_STATEMENT_ROWS) {
    const exclude = (request.exclude ?? []).filter((e) => e.target >= i && e.target < i + MAX_STATEMENT_ROWS).map((e) => ({ ...e, target: e.target - i }));
    parts.push({ ...request, targets: request.targets.slice(i, i + MAX_STATEMENT_ROWS), remote: [], exclude, watch: [] });
  }
  for (let i = 0; i < remote.length; i += MAX_STATEMENT_ROWS) {
    parts.push({ ...request, targets: [], remote: remote.slice(i, i + MAX_STATEMENT_ROWS), appservices: [], exclude: [], watch: [] });
  }
  return parts;
}

/**
 * MSC3944, steps (1)–(3) of stale-requests.ts, inside the transaction holding the devices' row
 * locks: deletes the undelivered requests each cancellation removes, and answers which of the
 * send's messages are therefore not stored (by target and device), as targets and as a count.
 */
async function dropStaleRequests(
  inbox: DeviceInboxStore,
  request: EnqueueRequest,
  cancels: readonly (CancelKey | null)[],
): Promise<{ exclude: { target: number; deviceId: string }[]; dropped: Set<string>; count: number }> {
  // `*` stays `*`: the statements match every device of the user, as the send statement expands it.
  const keys: RequestKey[] = [];
  request.targets.forEach((t, o) => {
    const cancel = cancels[o];
    if (cancel != null) keys.push({ userId: t.userId, deviceId: t.deviceId, ...cancel });
  });
  // (1) The keys' queued rows, locked: waits for any sync still recording one of them as read.
  const seen = new Set<number>();
  const queued = (await inbox.lockRequestsWithKeys(request.sender, request.type, keys)).filter((row) => !seen.has(row.streamId) && seen.add(row.streamId));
  // (2) A statement of its own, so a snapshot taken after those waits.
  const read = new Set((await inbox.takeRequestReads(request.sender, request.type, keys)).map(requestKeyString));
  // (3) Per device and key: the requests after its last row that is not one, unless one of its requests was read.
  const trailing = new Map<string, number[]>();
  for (const row of queued) {
    const k = requestKeyString(row);
    if (row.action !== 'request') trailing.set(k, []);
    else {
      const list = trailing.get(k);
      if (list === undefined) trailing.set(k, [row.streamId]);
      else list.push(row.streamId);
    }
  }
  const drop = new Map<string, RequestKey>();
  const ids: number[] = [];
  for (const [k, list] of trailing) {
    if (list.length === 0 || read.has(k)) continue;
    const row = queued.find((q) => requestKeyString(q) === k) as RequestKey;
    drop.set(k, row);
    ids.push(...list);
  }
  const requestsDeleted = await inbox.deleteByIds(ids);
  const exclude: { target: number; deviceId: string }[] = [];
  const dropped = new Set<string>();
  request.targets.forEach((t, o) => {
    const cancel = cancels[o];
    if (cancel == null) return;
    for (const key of drop.values()) {
      if (key.userId !== t.userId || key.requestingDeviceId !== cancel.requestingDeviceId || key.requestId !== cancel.requestId) continue;
      if (t.deviceId !== '*' && t.deviceId !== key.deviceId) continue;
      exclude.push({ target: o, deviceId: key.deviceId });
      dropped.add(`${key.userId}\u0000${key.deviceId}`);
    }
  });
  return { exclude, dropped, count: requestsDeleted + exclude.length };
}

/** A cancellation key for one device as one string, to match rows, records and targets by. */
function requestKeyString(k: RequestKey): string {
  return `${k.userId}\u0000${k.deviceId}\u0000${k.requestingDeviceId}\u0000${k.requestId}`;
}
