/**
 * What the server keeps of each accepted KeyPackage (the `metadata` of its one-time or fallback
 * key), so that claims are matched without decoding packages under row locks, and without ts-mls:
 * this file is loaded at start, the MLS library only at the first upload (lazy.ts).
 */
export interface KeyPackageMetadata {
  /** RFC 9420 §17.1 name of the package's cipher suite. */
  ciphersuite: string;
  /** KeyPackageRef (RFC 9420 §5.2), unpadded base64: for logs and tests. */
  ref: string;
  /** The leaf node's capabilities (RFC 9420 §7.2), as numbers. */
  extensions: number[];
  proposals: number[];
  credentials: number[];
  /** Whether the package carries the last_resort extension. */
  last_resort: boolean;
}

/** RFC 9420 §11.1 RequiredCapabilities, as numbers. */
export interface RequiredCapabilities {
  extensionTypes: number[];
  proposalTypes: number[];
  credentialTypes: number[];
}

// RFC 9420 §7.2: a leaf need not (and must not) list the default extensions (1–5) and proposals
// (1–7); every client supports them.
const DEFAULT_EXTENSIONS = new Set([1, 2, 3, 4, 5]);
const DEFAULT_PROPOSALS = new Set([1, 2, 3, 4, 5, 6, 7]);

/** Reads RFC 9420 §2.1.2's variable-length vector length (1, 2 or 4 bytes); null when malformed. */
function readLength(bytes: Uint8Array, at: number): { length: number; next: number } | null {
  const first = bytes[at];
  if (first === undefined) return null;
  const prefix = first >> 6;
  if (prefix === 0) return { length: first & 0x3f, next: at + 1 };
  if (prefix === 1) {
    if (at + 2 > bytes.length) return null;
    const length = ((first & 0x3f) << 8) | (bytes[at + 1] ?? 0);
    return length < 64 ? null : { length, next: at + 2 };
  }
  if (prefix === 2) {
    if (at + 4 > bytes.length) return null;
    const length = (first & 0x3f) * 2 ** 24 + (bytes[at + 1] ?? 0) * 2 ** 16 + (bytes[at + 2] ?? 0) * 2 ** 8 + (bytes[at + 3] ?? 0);
    return length < 16384 ? null : { length, next: at + 4 };
  }
  return null;
}

/** A vector of uint16 at `at`; null when malformed. */
function readUint16Vector(bytes: Uint8Array, at: number): { values: number[]; next: number } | null {
  const header = readLength(bytes, at);
  if (header === null || header.length % 2 !== 0 || header.next + header.length > bytes.length) return null;
  const values: number[] = [];
  for (let i = header.next; i < header.next + header.length; i += 2) values.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  return { values, next: header.next + header.length };
}

/** Decodes an RFC 9420 RequiredCapabilities struct exactly (no trailing bytes); null when malformed. */
export function decodeRequiredCapabilities(bytes: Uint8Array): RequiredCapabilities | null {
  const extensions = readUint16Vector(bytes, 0);
  const proposals = extensions === null ? null : readUint16Vector(bytes, extensions.next);
  const credentials = proposals === null ? null : readUint16Vector(bytes, proposals.next);
  if (extensions === null || proposals === null || credentials === null || credentials.next !== bytes.length) return null;
  return { extensionTypes: extensions.values, proposalTypes: proposals.values, credentialTypes: credentials.values };
}

/**
 * Whether a package satisfies a claim (MSC4244 §KeyPackages): its cipher suite is acceptable, and
 * its leaf supports every required extension, proposal and credential type (RFC 9420 §11.1).
 */
export function satisfies(metadata: KeyPackageMetadata, acceptable: readonly string[], required: RequiredCapabilities | null): boolean {
  if (!acceptable.includes(metadata.ciphersuite)) return false;
  if (required === null) return true;
  return (
    required.extensionTypes.every((t) => DEFAULT_EXTENSIONS.has(t) || metadata.extensions.includes(t)) &&
    required.proposalTypes.every((t) => DEFAULT_PROPOSALS.has(t) || metadata.proposals.includes(t)) &&
    required.credentialTypes.every((t) => metadata.credentials.includes(t))
  );
}
