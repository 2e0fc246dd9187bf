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

export interface PackedTxn {
  edus: DirectToDeviceEdu[];
  /** The outbox rows these EDUs carry, deleted once the destination acknowledged them. */
  streamIds: number[];
}

function newMessageId(): string {
  // 16 characters, well under the spec's 32-codepoint limit.
  return randomBytes(12).toString('base64url');
}

// Bytes the canonical JSON of a message entry adds to an EDU: "user":{"device":content},
const entryBytes = (userId: string, deviceId: string, content: string) =>
  Buffer.byteLength(JSON.stringify(userId)) + Buffer.byteLength(JSON.stringify(deviceId)) + Buffer.byteLength(content) + 6;

/**
 * Packs outbox rows into m.direct_to_device EDUs of at most 64 KiB of content and at most 100
 * per transaction. One EDU carries one (sender, type) and at most one message per (user,
 * device) — the EDU's map has a single slot for each, and `*` counts as every device. The
 * receiver applies a transaction's EDUs in order, so a row may join any EDU of its (sender, type)
 * that comes after every EDU holding an earlier row for the same device (for `*`: for the same
 * user); it joins the first such EDU with room, else starts a new one. Interleaved senders thus
 * still share EDUs (one EDU per message when consecutive rows alternate between senders would
 * cost the receiver one database transaction per message), and each device's order is kept.
 * Packing stops at the first row that finds no place, so the rows taken are a prefix.
 */
export function packEdus(rows: readonly OutboxRow[]): PackedTxn {
  const edus: DirectToDeviceEdu[] = [];
  const sizes: number[] = [];
  const streamIds: number[] = [];
  // Index of the last EDU holding an entry for: a (user, device); a user's "*"; a user at all.
  const lastForDevice = new Map<string, number>();
  const lastForStar = new Map<string, number>();
  const lastForUser = new Map<string, number>();
  // The EDUs of each (sender, type), in order.
  const bySenderType = new Map<string, number[]>();
  for (const row of rows) {
    const add = entryBytes(row.userId, row.deviceId, row.content);
    const deviceKey = `${row.userId}\u0000${row.deviceId}`;
    const earliest =
      row.deviceId === '*'
        ? (lastForUser.get(row.userId) ?? -1) + 1
        : Math.max(lastForDevice.get(deviceKey) ?? -1, lastForStar.get(row.userId) ?? -1) + 1;
    const senderType = JSON.stringify([row.sender, row.type]);
    let list = bySenderType.get(senderType);
    if (list === undefined) bySenderType.set(senderType, (list = []));
    let target = list.find((i) => i >= earliest && (sizes[i] as number) + add <= MAX_EDU_CONTENT_BYTES);
    if (target === undefined) {
      if (edus.length === MAX_EDUS_PER_TXN) break;
      target = edus.length;
      edus.push({ edu_type: 'm.direct_to_device', content: { sender: row.sender, type: row.type, message_id: newMessageId(), messages: {} } });
      // {"message_id":"…","messages":{},"sender":"…","type":"…"}
      sizes.push(72 + Buffer.byteLength(JSON.stringify(row.sender)) + Buffer.byteLength(JSON.stringify(row.type)));
      list.push(target);
    }
    const edu = edus[target] as DirectToDeviceEdu;
    const byDevice = (edu.content.messages[row.userId] ??= {});
    byDevice[row.deviceId] = JSON.parse(row.content) as Record<string, unknown>;
    sizes[target] = (sizes[target] as number) + add;
    streamIds.push(row.streamId);
    lastForDevice.set(deviceKey, target);
    if (row.deviceId === '*') lastForStar.set(row.userId, target);
    lastForUser.set(row.userId, Math.max(lastForUser.get(row.userId) ?? -1, target));
  }
  return { edus, streamIds };
}
