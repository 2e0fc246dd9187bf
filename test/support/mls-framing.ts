/**
 * A reader of the clear-text header of an RFC 9420 MLSMessage, written from the RFC (§2.1.2,
 * §6, §6.2, §6.3, §10, §12.4.3) and not from ts-mls, so tests can check what the delivery service
 * reads (through ts-mls) against an independent reading of the same bytes.
 */

export type WireFormat = 'mls_public_message' | 'mls_private_message' | 'mls_welcome' | 'mls_group_info' | 'mls_key_package';

export interface MlsHeader {
  version: number;
  wireFormat: WireFormat;
  /** PublicMessage and PrivateMessage. */
  groupId?: Uint8Array;
  epoch?: bigint;
  contentType?: 'application' | 'proposal' | 'commit';
  /** PublicMessage: the sender's type (member, external, new_member_proposal, new_member_commit). */
  senderType?: number;
  /** KeyPackage and Welcome (their first field after the version), GroupInfo (in its GroupContext). */
  cipherSuite?: number;
}

const WIRE_FORMATS: Record<number, WireFormat> = {
  1: 'mls_public_message',
  2: 'mls_private_message',
  3: 'mls_welcome',
  4: 'mls_group_info',
  5: 'mls_key_package',
};
const CONTENT_TYPES = { 1: 'application', 2: 'proposal', 3: 'commit' } as const;

class Reader {
  offset = 0;
  constructor(private readonly bytes: Uint8Array) {}

  take(n: number): Uint8Array {
    if (this.offset + n > this.bytes.length) throw new RangeError('truncated');
    const out = this.bytes.subarray(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }

  uint(n: 1 | 2 | 4 | 8): bigint {
    let v = 0n;
    for (const b of this.take(n)) v = (v << 8n) | BigInt(b);
    return v;
  }

  /** §2.1.2: a variable-length integer, its length in the top two bits of the first byte. */
  varint(): number {
    const first = this.take(1)[0] ?? 0;
    const prefix = first >> 6;
    if (prefix === 3) throw new RangeError('invalid varint prefix');
    const length = 1 << prefix;
    let v = first & 0x3f;
    for (const b of this.take(length - 1)) v = v * 256 + b;
    return v;
  }

  vector(): Uint8Array {
    return this.take(this.varint());
  }
}

/** The header of an MLSMessage, or throws when the bytes are not one. */
export function readMlsHeader(bytes: Uint8Array): MlsHeader {
  const r = new Reader(bytes);
  const version = Number(r.uint(2));
  const wireFormat = WIRE_FORMATS[Number(r.uint(2))];
  if (wireFormat === undefined) throw new RangeError('unknown wire format');
  const header: MlsHeader = { version, wireFormat };
  if (wireFormat === 'mls_public_message') {
    header.groupId = r.vector();
    header.epoch = r.uint(8);
    header.senderType = Number(r.uint(1));
    if (header.senderType === 1 || header.senderType === 2) r.uint(4);
    r.vector(); // authenticated_data
    header.contentType = contentType(Number(r.uint(1)));
  } else if (wireFormat === 'mls_private_message') {
    header.groupId = r.vector();
    header.epoch = r.uint(8);
    header.contentType = contentType(Number(r.uint(1)));
  } else if (wireFormat === 'mls_group_info') {
    r.uint(2); // GroupContext.version
    header.cipherSuite = Number(r.uint(2));
  } else if (wireFormat === 'mls_key_package') {
    r.uint(2); // KeyPackage.version
    header.cipherSuite = Number(r.uint(2));
  } else {
    header.cipherSuite = Number(r.uint(2));
  }
  return header;
}

/** Just the variable-length integer at the start of `bytes` (for the RFC's deserialization vectors). */
export function readVarint(bytes: Uint8Array): number {
  return new Reader(bytes).varint();
}

function contentType(n: number): 'application' | 'proposal' | 'commit' {
  const t = CONTENT_TYPES[n as 1 | 2 | 3] as 'application' | 'proposal' | 'commit' | undefined;
  if (t === undefined) throw new RangeError('unknown content type');
  return t;
}
