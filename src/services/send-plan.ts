import { encodeContent } from '../shared/content-checks.ts';
import type { Origin } from '../sdk/define-handler.ts';
import { parseUserId } from '../shared/user-id.ts';
import type { TxnKey } from '../storage/txn-store.ts';
import { REQUEST_TYPES, cancellationKeyOf } from './stale-requests.ts';

/** One send-to-device request (a client's PUT, one federation EDU, or a module's reply). */
export interface SendToDeviceInput {
  sender: string;
  senderDevice: string | null;
  type: string;
  origin: Origin;
  /** user ID → device ID (or `*`) → content */
  messages: Record<string, Record<string, Record<string, unknown>>>;
  /** Set for client requests: makes a retry return the first response with no new effect. */
  txn?: TxnKey;
  /** Set for federation EDUs: (origin, message_id), applied once. */
  inboundMessage?: { origin: string; messageId: string };
  /** Federation: only this server's users may be addressed; others are dropped, never relayed. */
  localOnly?: boolean;
}

/** A message addressed to the server user `@:<server_name>`, handed to dispatch, never stored. */
export interface ServerUserMessage {
  type: string;
  sender: string;
  senderDevice: string | null;
  origin: Origin;
  content: Record<string, unknown>;
}

/** What the planner needs to know beyond the request; all of it in memory. */
export interface PlanContext {
  serverName: string;
  /** The appservices owed a copy of a local user's messages (MSC4203), by registration id. */
  appserviceRecipients(userId: string): readonly { appserviceId: string; exclusive: boolean }[];
}

/** Why a planned message is not stored; the storage step adds `unknown_user` and `unknown_device`. */
export type PlannedDrop = 'server_user_device' | 'invalid_user' | 'not_local';

/** A local target: the device may be `*` (every device of the user, expanded by the statement that stores it). */
export interface LocalTarget {
  userId: string;
  deviceId: string;
  /** Canonical JSON text of the content, as stored. */
  content: string;
}

export interface RemoteMessage {
  destination: string;
  userId: string;
  deviceId: string;
  content: string;
}

export interface AppserviceOwed {
  userId: string;
  appserviceId: string;
  exclusive: boolean;
}

/** A key or secret request cancellation's key (MSC3944). */
export type CancelKey = NonNullable<ReturnType<typeof cancellationKeyOf>>;

/** One send, checked and split by where each message goes. */
export interface SendPlan {
  local: LocalTarget[];
  remote: RemoteMessage[];
  appservices: AppserviceOwed[];
  serverUser: ServerUserMessage[];
  /** Messages that go nowhere, by reason: counted by the caller once the send is claimed. */
  dropped: Partial<Record<PlannedDrop, number>>;
  /**
   * MSC3944: for a key or secret request cancellation, the key each local target names (aligned
   * with `local`; null for a target an appservice also receives). Null for any other send.
   */
  cancels: (CancelKey | null)[] | null;
  /** Rows it may write: local targets (`*` counting one) and remote messages, at least 1. */
  weight: number;
}

/**
 * The rules of addressing, with no I/O and no counters: the content cap (refusals throw a
 * MatrixError and nothing is planned), the server user's one device `""` (`*` rewritten to it,
 * MSC4246), other servers' users (relayed, or dropped when `localOnly`), invalid user IDs,
 * appservice copies (MSC4203) and cancellation keys (MSC3944). Whether a local user or device
 * exists is decided where the messages are stored, under the devices' row locks.
 */
export function planSend(input: SendToDeviceInput, ctx: PlanContext): SendPlan {
  const serverUserId = `@:${ctx.serverName}`;
  const local: LocalTarget[] = [];
  const remote: RemoteMessage[] = [];
  const appservices: AppserviceOwed[] = [];
  const serverUser: ServerUserMessage[] = [];
  const dropped: Partial<Record<PlannedDrop, number>> = {};
  const drop = (reason: PlannedDrop, n: number): void => {
    if (n > 0) dropped[reason] = (dropped[reason] ?? 0) + n;
  };
  // Every content is checked before anything is planned: one refusal refuses the whole request.
  const encoded = new Map<Record<string, unknown>, string>();
  for (const byDevice of Object.values(input.messages)) {
    for (const content of Object.values(byDevice)) if (!encoded.has(content)) encoded.set(content, encodeContent(content));
  }
  const textOf = (content: Record<string, unknown>): string => encoded.get(content) as string;
  // MSC3944: only a cancellation's key is looked for, so other sends pay one type check.
  const cancelling = REQUEST_TYPES.has(input.type);
  const cancels: (CancelKey | null)[] = [];
  for (const [userId, byDevice] of Object.entries(input.messages)) {
    if (userId === serverUserId) {
      // MSC4246: the server user has the one device "", and "*" is rewritten to it, so a
      // request naming both still reaches the handler once.
      const content = byDevice[''] ?? byDevice['*'];
      if (content !== undefined) serverUser.push({ type: input.type, sender: input.sender, senderDevice: input.senderDevice, origin: input.origin, content });
      drop('server_user_device', Object.keys(byDevice).length - (content === undefined ? 0 : 1));
      continue;
    }
    // Other servers' server users (empty localpart) are reachable over federation.
    const parsed = parseUserId(userId, { allowEmptyLocalpart: true });
    if (parsed === null) {
      drop('invalid_user', Object.keys(byDevice).length);
      continue;
    }
    if (parsed.serverName !== ctx.serverName) {
      if (input.localOnly === true) drop('not_local', Object.keys(byDevice).length);
      else for (const [deviceId, content] of Object.entries(byDevice)) remote.push({ destination: parsed.serverName, userId, deviceId, content: textOf(content) });
      continue;
    }
    for (const [deviceId, content] of Object.entries(byDevice)) local.push({ userId, deviceId, content: textOf(content) });
    const recipients = ctx.appserviceRecipients(userId);
    for (const r of recipients) appservices.push({ userId, appserviceId: r.appserviceId, exclusive: r.exclusive });
    if (cancelling) {
      // An appservice's transactions are readers that leave no trace: its users are left alone.
      for (const content of Object.values(byDevice)) cancels.push(recipients.length > 0 ? null : cancellationKeyOf(input.type, content));
    }
  }
  return {
    local,
    remote,
    appservices,
    serverUser,
    dropped,
    cancels: cancels.some((k) => k !== null) ? cancels : null,
    weight: Math.max(1, local.length + remote.length),
  };
}

/** Where messages for the server user go once their send is stored: the MSC4246 dispatcher. */
export interface ServerUserInbox {
  /** Resolves when each message's handler finished or its dispatch deadline passed. */
  dispatch(messages: readonly ServerUserMessage[]): Promise<unknown>;
}
