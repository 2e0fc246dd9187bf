import { randomBytes } from 'node:crypto';
import type { OutboxRow } from '../storage/federation-outbox-store.ts';

export const MAX_EDU_CONTENT_BYTES = 65_536;
export const MAX_EDUS_PER_TXN = 100;

export interface DirectToDeviceEdu {
  edu_type: 'm.direct_to_device';
  content: {
    sender: string;
    type: string;
    message_id: string;
    messages: Record<string, Record<string, Record<string, unknown>>>;
  };
}

/** An EDU queued whole (a device-list update): sent as it is, in queue order. */
export interface OtherEdu {
  edu_type: string;
  content: unknown;
}

export interface PackedTxn {
  edus: (DirectToDeviceEdu | OtherEdu)[];
  /** The outbox rows these EDUs carry, deleted once the destination acknowledged them. */
  streamIds: number[];
}

export interface PackOptions {
  /**
   * The receiver applies a transaction's EDUs one after another, in order (our own server says
   * so in `/_matrix/federation/v1/version`). Synapse applies them concurrently, 10 at a time, so
   * for any other receiver a transaction carries at most one message per (sender, device).
   */
  receiverAppliesInOrder: boolean;
}

function newMessageId(): string {
  // 16 characters, well under the spec's 32-codepoint limit.
  return randomBytes(12).toString('base64url');
}

// Bytes the canonical JSON of a message entry adds to an EDU: "user":{"device":content},
const entryBytes = (userId: string, deviceId: string, content: string) =>
  Buffer.byteLength(JSON.stringify(userId)) + Buffer.byteLength(JSON.stringify(deviceId)) + Buffer.byteLength(content) + 6;

/**
 * Packs outbox rows (oldest first) into m.direct_to_device EDUs of at most 64 KiB of content and
 * at most 100 per transaction, keeping the only order promised over federation: per (sender,
 * recipient device), where `*` stands for every device of its user.
 *
 * One EDU carries one (sender, type) and at most one message per (user, device) — its map has a
 * single slot for each. When the receiver applies EDUs in order, a row may join any EDU of its
 * (sender, type) after every EDU holding an earlier row of the same sender for the same device;
 * otherwise the transaction may hold only one such row at all, and the next waits for the next
 * transaction. A row that finds no place is left for a later transaction, and so is every later
 * row of its sender for the same device, so what is left keeps its order; rows for other devices
 * still fill the transaction. Many devices thus share transactions either way; only messages for
 * one device from one sender are spread over several.
 */
export function packEdus(rows: readonly OutboxRow[], opts: PackOptions): PackedTxn {
  const edus: (DirectToDeviceEdu | OtherEdu)[] = [];
  const sizes: number[] = [];
  const streamIds: number[] = [];
  // Per (sender, user, device) and per (sender, user) for `*`: the index of the last EDU taken
  // with such a row, and whether such a row was left behind.
  const lastForDevice = new Map<string, number>();
  const lastForStar = new Map<string, number>();
  const lastForUser = new Map<string, number>();
  const leftDevice = new Set<string>();
  const leftUser = new Set<string>();
  // The EDUs of each (sender, type), in order.
  const bySenderType = new Map<string, number[]>();
  // Whole EDUs are chained per user (`prev_id`): one left behind holds back that user's later ones,
  // and a receiver that applies EDUs concurrently gets at most one per user per transaction.
  const wholeTaken = new Set<string>();
  const wholeLeft = new Set<string>();
  for (const row of rows) {
    if (row.eduType !== undefined && row.eduType !== null) {
      const key = `${row.eduType}\u0000${row.userId}`;
      if (wholeLeft.has(key) || edus.length === MAX_EDUS_PER_TXN || (wholeTaken.has(key) && !opts.receiverAppliesInOrder)) {
        wholeLeft.add(key);
        continue;
      }
      edus.push({ edu_type: row.eduType, content: JSON.parse(row.content) as unknown });
      sizes.push(MAX_EDU_CONTENT_BYTES);
      streamIds.push(row.streamId);
      wholeTaken.add(key);
      continue;
    }
    const userKey = `${row.sender}\u0000${row.userId}`;
    const deviceKey = `${userKey}\u0000${row.deviceId}`;
    const star = row.deviceId === '*';
    // A row behind one that was left must be left too, or it would overtake it.
    const blocked = star ? leftUser.has(userKey) : leftDevice.has(deviceKey) || leftDevice.has(`${userKey}\u0000*`);
    // The last EDU holding an earlier row this one must come after; -1 for none.
    const previous = star ? (lastForUser.get(userKey) ?? -1) : Math.max(lastForDevice.get(deviceKey) ?? -1, lastForStar.get(userKey) ?? -1);
    const target = blocked || (previous >= 0 && !opts.receiverAppliesInOrder) ? undefined : place(row, previous + 1);
    if (target === undefined) {
      leftDevice.add(deviceKey);
      leftUser.add(userKey);
      continue;
    }
    const edu = edus[target] as DirectToDeviceEdu;
    const byDevice = (edu.content.messages[row.userId] ??= {});
    byDevice[row.deviceId] = JSON.parse(row.content) as Record<string, unknown>;
    sizes[target] = (sizes[target] as number) + entryBytes(row.userId, row.deviceId, row.content);
    streamIds.push(row.streamId);
    lastForDevice.set(deviceKey, target);
    if (star) lastForStar.set(userKey, target);
    lastForUser.set(userKey, Math.max(lastForUser.get(userKey) ?? -1, target));
  }
  return { edus, streamIds };

  /** The first EDU of the row's (sender, type) at or after `earliest` with room, or a new one; undefined when the transaction is full. */
  function place(row: OutboxRow, earliest: number): number | undefined {
    const add = entryBytes(row.userId, row.deviceId, row.content);
    const senderType = JSON.stringify([row.sender, row.type]);
    let list = bySenderType.get(senderType);
    if (list === undefined) bySenderType.set(senderType, (list = []));
    const found = list.find((i) => i >= earliest && (sizes[i] as number) + add <= MAX_EDU_CONTENT_BYTES);
    if (found !== undefined) return found;
    if (edus.length === MAX_EDUS_PER_TXN) return undefined;
    // {"message_id":"…","messages":{},"sender":"…","type":"…"}
    const size = 72 + Buffer.byteLength(JSON.stringify(row.sender)) + Buffer.byteLength(JSON.stringify(row.type));
    edus.push({ edu_type: 'm.direct_to_device', content: { sender: row.sender, type: row.type, message_id: newMessageId(), messages: {} } });
    sizes.push(size);
    list.push(edus.length - 1);
    return edus.length - 1;
  }
}
