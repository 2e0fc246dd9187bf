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
 * Packs outbox rows, in order, into m.direct_to_device EDUs of at most 64 KiB of content and at
 * most 100 per transaction. One EDU carries one (sender, type) and at most one message per
 * (user, device) — the EDU's map has a single slot for each, and `*` counts as every device —
 * so a new EDU starts when any of those change or the size would overflow. Keeping rows in
 * order keeps each device's order.
 */
export function packEdus(rows: readonly OutboxRow[]): PackedTxn {
  const edus: DirectToDeviceEdu[] = [];
  const streamIds: number[] = [];
  let current: DirectToDeviceEdu | null = null;
  let size = 0;
  for (const row of rows) {
    const add = entryBytes(row.userId, row.deviceId, row.content);
    const forUser = current?.content.messages[row.userId];
    // Within an EDU a user's devices have no order (keys are sorted in canonical JSON), so '*'
    // must not share an EDU with any other entry for that user: both would reach one device.
    const collides =
      forUser !== undefined && (forUser[row.deviceId] !== undefined || row.deviceId === '*' || forUser['*'] !== undefined);
    const fits =
      current !== null &&
      current.content.sender === row.sender &&
      current.content.type === row.type &&
      !collides &&
      size + add <= MAX_EDU_CONTENT_BYTES;
    if (!fits) {
      if (edus.length === MAX_EDUS_PER_TXN) break;
      current = { edu_type: 'm.direct_to_device', content: { sender: row.sender, type: row.type, message_id: newMessageId(), messages: {} } };
      edus.push(current);
      // {"message_id":"…","messages":{},"sender":"…","type":"…"}
      size = 72 + Buffer.byteLength(JSON.stringify(row.sender)) + Buffer.byteLength(JSON.stringify(row.type));
    }
    const edu = current as DirectToDeviceEdu;
    const byDevice = (edu.content.messages[row.userId] ??= {});
    byDevice[row.deviceId] = JSON.parse(row.content) as Record<string, unknown>;
    size += add;
    streamIds.push(row.streamId);
  }
  return { edus, streamIds };
}
