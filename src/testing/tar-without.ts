/**
 * Drops entries from a tar archive (ustar, as PGlite's `dumpDataDir('none')` writes it): each
 * entry whose path `drop` answers true for goes, with any pax header that precedes it. The path is
 * the pax header's `path` record when it has one (a name too long for the ustar header), else the
 * header's prefix and name. The archive is otherwise copied byte for byte; entries are not parsed
 * beyond their headers.
 */
export function tarWithout(tar: Uint8Array, drop: (path: string) => boolean): Uint8Array {
  const BLOCK = 512;
  const kept: Uint8Array[] = [];
  let pending: Uint8Array[] = [];
  let at = 0;
  while (at + BLOCK <= tar.length) {
    const header = tar.subarray(at, at + BLOCK);
    // Two zero blocks end the archive; what follows them is copied as is.
    if (header.every((b) => b === 0)) break;
    const size = Number.parseInt(text(header, 124, 12).trim() || '0', 8);
    const end = at + BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    if (!Number.isFinite(size) || end > tar.length) throw new Error('not a tar archive this can read');
    const entry = tar.subarray(at, end);
    const type = String.fromCharCode(header[156] ?? 0);
    at = end;
    // A pax header ('x') describes the entry after it: it stays or goes with that entry.
    if (type === 'x') {
      pending.push(entry);
      continue;
    }
    const prefix = text(header, 345, 155);
    const name = text(header, 0, 100);
    const paxPath = pending.map(paxPathOf).findLast((p) => p !== null) ?? null;
    const path = (paxPath ?? (prefix === '' ? name : `${prefix}/${name}`)).replace(/^\/+/, '');
    if (!drop(path)) kept.push(...pending, entry);
    pending = [];
  }
  kept.push(tar.subarray(at));
  const out = new Uint8Array(kept.reduce((n, part) => n + part.length, 0));
  let offset = 0;
  for (const part of kept) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** A NUL-terminated header field. */
function text(header: Uint8Array, offset: number, length: number): string {
  const field = header.subarray(offset, offset + length);
  const nul = field.indexOf(0);
  return new TextDecoder().decode(nul < 0 ? field : field.subarray(0, nul));
}

/** The `path` record of a pax extended header entry (records are "<length> <key>=<value>\n"), or null. */
function paxPathOf(entry: Uint8Array): string | null {
  const size = Number.parseInt(text(entry, 124, 12).trim() || '0', 8);
  const records = new TextDecoder().decode(entry.subarray(512, 512 + size));
  const match = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(records);
  return match?.[1] ?? null;
}
