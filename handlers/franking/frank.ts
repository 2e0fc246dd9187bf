import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * The frank's arithmetic, shared by the server and by clients that verify franks (see
 * examples/franking-report.ts). Following the MIMI draft's franking:
 *
 *   franking_tag = HMAC-SHA256(franking_key, message)                       — by the sender's client
 *   server_frank = HMAC-SHA256(server_hmac_key, frank_input)                 — by the server
 *   signature    = Ed25519(server_signing_key, "org.example.franking.v1" ‖ 0x00 ‖ u32 key_version ‖ frank_input ‖ server_frank)
 *
 * frank_input = franking_tag (32 bytes) ‖ u32 len ‖ context ‖ u64 accepted_ts ‖ u32 len ‖ sender,
 * integers big-endian, strings UTF-8. Length prefixes keep the concatenation unambiguous
 * (context "a" + sender "b:c" must never equal context "a:b" + sender "c").
 */
export const SIGNATURE_LABEL = 'org.example.franking.v1';
export const TAG_BYTES = 32;

export function frankingTag(frankingKey: Uint8Array, message: Uint8Array): Buffer {
  return createHmac('sha256', frankingKey).update(message).digest();
}

export interface FrankFields {
  frankingTag: Uint8Array;
  context: string;
  acceptedTs: number;
  sender: string;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

export function frankInput(f: FrankFields): Buffer {
  const context = Buffer.from(f.context, 'utf8');
  const sender = Buffer.from(f.sender, 'utf8');
  const ts = Buffer.alloc(8);
  ts.writeBigUInt64BE(BigInt(f.acceptedTs));
  return Buffer.concat([f.frankingTag, u32(context.length), context, ts, u32(sender.length), sender]);
}

export function serverFrank(hmacKey: Uint8Array, f: FrankFields): Buffer {
  return createHmac('sha256', hmacKey).update(frankInput(f)).digest();
}

/** The bytes the server's Ed25519 signature covers. */
export function signedFrankBytes(keyVersion: number, f: FrankFields, frank: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(SIGNATURE_LABEL, 'utf8'), Buffer.from([0]), u32(keyVersion), frankInput(f), frank]);
}

/** Compares MACs in constant time; false (not a throw) when the lengths differ. */
export function macEquals(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
