import { decodeMlsMessage, type ContentTypeName, type MLSMessage } from 'ts-mls';
import { decodeBase64, encodeBase64 } from '../../src/sdk/index.ts';

/** Decodes unpadded (or padded) base64 into an MLSMessage; null unless it decodes exactly, with no trailing bytes. */
export function decodeMlsMessageBase64(text: string): { message: MLSMessage; bytes: Uint8Array } | null {
  const bytes = decodeBase64(text);
  if (bytes === null || bytes.length === 0) return null;
  let decoded: [MLSMessage, number] | undefined;
  try {
    decoded = decodeMlsMessage(bytes, 0);
  } catch {
    // ts-mls throws on some malformed input rather than answering undefined.
    return null;
  }
  if (decoded === undefined || decoded[1] !== bytes.length || decoded[0].version !== 'mls10') return null;
  return { message: decoded[0], bytes };
}

/** What a delivery service can read of a handshake or application message without any keys. */
export interface FramedMessageInfo {
  /** Unpadded base64 of the MLS group_id. */
  groupId: string;
  epoch: number;
  contentType: ContentTypeName;
  wireformat: 'mls_public_message' | 'mls_private_message';
}

/**
 * Group id, epoch and content type of a PublicMessage or PrivateMessage (RFC 9420 §6): both
 * carry them in the clear. Null for the other wire formats (Welcome, GroupInfo, KeyPackage).
 */
export function framedMessageInfo(message: MLSMessage): FramedMessageInfo | null {
  if (message.wireformat === 'mls_private_message') {
    const pm = message.privateMessage;
    return { groupId: encodeBase64(pm.groupId), epoch: toEpoch(pm.epoch), contentType: pm.contentType, wireformat: message.wireformat };
  }
  if (message.wireformat === 'mls_public_message') {
    const c = message.publicMessage.content;
    return { groupId: encodeBase64(c.groupId), epoch: toEpoch(c.epoch), contentType: c.contentType, wireformat: message.wireformat };
  }
  return null;
}

// Epochs are uint64 on the wire; past 2^53 a group would need 9 quadrillion commits, so a
// number column is enough and an absurd value is clamped to fail the epoch comparison.
function toEpoch(epoch: bigint): number {
  return epoch > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(epoch);
}
