import { describe, expect, it } from 'vitest';
import { tarWithout } from '../src/testing/tar-without.ts';

/** A ustar entry: header (name, octal size, type flag) and data padded to 512-byte blocks. */
function entry(name: string, data: string, type = '0'): Uint8Array {
  const body = new TextEncoder().encode(data);
  const out = new Uint8Array(512 + Math.ceil(body.length / 512) * 512);
  out.set(new TextEncoder().encode(name), 0);
  out.set(new TextEncoder().encode(`${body.length.toString(8).padStart(11, '0')}\0`), 124);
  out[156] = type.charCodeAt(0);
  out.set(new TextEncoder().encode('ustar\u000000'), 257);
  out.set(body, 512);
  return out;
}

function archive(...entries: Uint8Array[]): Uint8Array {
  const end = new Uint8Array(1024);
  const out = new Uint8Array(entries.reduce((n, e) => n + e.length, 0) + end.length);
  let at = 0;
  for (const e of [...entries, end]) {
    out.set(e, at);
    at += e.length;
  }
  return out;
}

/** The entries' names and data, read back the way tar does. */
function list(tar: Uint8Array): string[] {
  const names: string[] = [];
  for (let at = 0; at + 512 <= tar.length; ) {
    const header = tar.subarray(at, at + 512);
    if (header.every((b) => b === 0)) break;
    const size = Number.parseInt(new TextDecoder().decode(header.subarray(124, 135)), 8);
    const name = new TextDecoder().decode(header.subarray(0, 100)).replace(/\0.*$/s, '');
    names.push(`${name}=${new TextDecoder().decode(tar.subarray(at + 512, at + 512 + size))}`);
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return names;
}

describe('tarWithout', () => {
  it('drops the entries asked for, with the pax header before one, and keeps the rest and the end blocks as they were', () => {
    const big = 'x'.repeat(1300);
    const tar = archive(
      entry('/pg_wal/000000010000000000000009', 'current'),
      entry('/pg_wal/000000010000000000000009.pax', 'path=...', 'x'),
      entry('/pg_wal/00000001000000000000000A', big),
      entry('/base/5/1255', big),
      entry('/pg_wal/00000001000000000000000B', 'spare'),
    );
    const out = tarWithout(tar, (path) => path.startsWith('pg_wal/') && !path.endsWith('9'));
    expect(list(out)).toEqual(['/pg_wal/000000010000000000000009=current', `/base/5/1255=${big}`]);
    expect(out.length).toBe(512 + 512 + 512 + 1536 + 1024);
    expect(out.subarray(out.length - 1024).every((b) => b === 0)).toBe(true);
  });

  it('judges an entry by the path its pax header gives, not by the ustar name it overrides', () => {
    const pax = (path: string) => {
      const record = (n: number) => `${n} path=${path}\n`;
      let n = record(0).length;
      while (record(n).length !== n) n = record(n).length;
      return entry('PaxHeaders/x', record(n), 'x');
    };
    const tar = archive(
      // A WAL segment under a long name the ustar header could not hold: it goes.
      pax('/pg_wal/00000001000000000000000A'),
      entry('/pg_wal/truncated', 'spare'),
      // A ustar name that looks like a spare segment, whose real path is another file: it stays.
      pax('/base/5/a-long-relation-file-name'),
      entry('/pg_wal/00000001000000000000000B', 'relation'),
    );
    const out = tarWithout(tar, (path) => /^pg_wal\/[0-9A-F]{24}$/.test(path) && !path.endsWith('9'));
    expect(list(out)).toEqual([expect.stringMatching(/^PaxHeaders\/x=\d+ path=\/base\/5\/a-long-relation-file-name\n$/), '/pg_wal/00000001000000000000000B=relation']);
  });

  it('keeps everything when nothing is to go, byte for byte', () => {
    const tar = archive(entry('a', 'one'), entry('b', 'two'));
    expect(tarWithout(tar, () => false)).toEqual(tar);
  });

  it('refuses an archive whose entry runs past its end', () => {
    const tar = entry('a', 'x'.repeat(600)).subarray(0, 700);
    expect(() => tarWithout(tar, () => false)).toThrow(/not a tar archive/);
  });
});
