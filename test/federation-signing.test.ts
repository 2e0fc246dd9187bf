import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeBase64, encodeBase64 } from '../src/shared/base64.ts';
import { signingKeyFromSeed } from '../src/shared/ed25519.ts';
import { packEdus, MAX_EDU_CONTENT_BYTES, type DirectToDeviceEdu, type PackedTxn } from '../src/federation/edu-packer.ts';
import { signJson, verifySignature } from '../src/federation/json-signing.ts';
import { ServerDiscovery } from '../src/federation/server-discovery.ts';
import { formatXMatrix, parseXMatrix } from '../src/federation/x-matrix.ts';
import { canonicalJson } from '../src/shared/canonical-json.ts';
import type { OutboxRow } from '../src/storage/federation-outbox-store.ts';

/** A packing of to-device rows only: every EDU is m.direct_to_device. */
function directOnly(packed: PackedTxn): { edus: DirectToDeviceEdu[]; streamIds: number[] } {
  return { edus: packed.edus.filter((e): e is DirectToDeviceEdu => e.edu_type === 'm.direct_to_device'), streamIds: packed.streamIds };
}

// Spec appendix "Signing JSON" test vectors.
const SEED = 'YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1';
const key = signingKeyFromSeed('ed25519:1', decodeBase64(SEED) as Buffer);

describe('JSON signing (spec test vectors)', () => {
  it('encodes keys and signatures as unpadded base64', () => {
    expect(encodeBase64(key.publicKey)).toMatch(/^[A-Za-z0-9+/]{43}$/);
    expect(decodeBase64(encodeBase64(key.publicKey))).toEqual(key.publicKey);
  });

  it('signs {} as the spec says', () => {
    expect(signJson({}, 'domain', key)).toEqual({
      signatures: { domain: { 'ed25519:1': 'K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ' } },
    });
  });

  it('signs {one: 1, two: "Two"} as the spec says, ignoring unsigned', () => {
    const signed = signJson({ one: 1, two: 'Two', unsigned: { age_ts: 1 } }, 'domain', key);
    expect(signed.signatures.domain?.['ed25519:1']).toBe('KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw');
  });

  it('verifies what it signs and rejects any change', () => {
    const signed = signJson({ a: 1, b: ['x'] }, 'domain', key);
    const sig = signed.signatures.domain?.['ed25519:1'] as string;
    expect(verifySignature(signed, sig, key.publicKey)).toBe(true);
    expect(verifySignature({ ...signed, a: 2 }, sig, key.publicKey)).toBe(false);
    expect(verifySignature(signed, 'not base64!', key.publicKey)).toBe(false);
    const other = signingKeyFromSeed('ed25519:2', Buffer.alloc(32, 7));
    expect(verifySignature(signed, sig, other.publicKey)).toBe(false);
  });
});

describe('X-Matrix authorization header', () => {
  it('parses the spec form and Synapse\'s parameter order, quoted or bare', () => {
    const spec = 'X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF..."';
    expect(parseXMatrix(spec)).toEqual({ origin: 'origin.hs.example.com', destination: 'destination.hs.example.com', key: 'ed25519:key1', sig: 'ABCDEF...' });
    const synapse = 'X-Matrix origin=syn.example:8448,key="ed25519:a_AbCd",sig="c2lnbmF0dXJl",destination="dest.example"';
    expect(parseXMatrix(synapse)).toEqual({ origin: 'syn.example:8448', destination: 'dest.example', key: 'ed25519:a_AbCd', sig: 'c2lnbmF0dXJl' });
    expect(parseXMatrix('X-Matrix origin=o,key="k",sig="s"')).toEqual({ origin: 'o', destination: null, key: 'k', sig: 's' });
  });

  it('rejects malformed headers', () => {
    for (const bad of ['Bearer abc', 'X-Matrix', 'X-Matrix origin="o",key="k"', 'X-Matrix origin="o,key="k",sig="s"', 'X-Matrix origin=o,origin=p,key=k,sig=s']) {
      expect(parseXMatrix(bad)).toBeNull();
    }
  });

  it('round-trips what it formats', () => {
    const auth = { origin: 'a.example', destination: 'b.example', key: 'ed25519:x', sig: 'abc+/' };
    expect(parseXMatrix(formatXMatrix(auth))).toEqual(auth);
  });
});

describe('EDU packing', () => {
  const row = (streamId: number, deviceId: string, bytes: number, extra: Partial<OutboxRow> = {}): OutboxRow => ({
    streamId,
    destination: 'remote.example',
    sender: '@alice:local.example',
    type: 'm.test',
    userId: '@bob:remote.example',
    deviceId,
    content: JSON.stringify({ p: 'x'.repeat(bytes) }),
    ...extra,
  });
  const inOrder = { receiverAppliesInOrder: true };
  const anyOrder = { receiverAppliesInOrder: false };

  it('packs many small messages into one EDU and splits by size at 64 KiB', () => {
    const rows = Array.from({ length: 300 }, (_, i) => row(i + 1, `D${i}`, 1000));
    for (const opts of [inOrder, anyOrder]) {
      const packed = directOnly(packEdus(rows, opts));
      expect(packed.streamIds).toHaveLength(300);
      expect(packed.edus.length).toBeGreaterThanOrEqual(5);
      expect(packed.edus.length).toBeLessThanOrEqual(6);
      for (const edu of packed.edus) expect(Buffer.byteLength(canonicalJson(edu.content))).toBeLessThanOrEqual(MAX_EDU_CONTENT_BYTES);
      const delivered = packed.edus.flatMap((e) => Object.keys(e.content.messages['@bob:remote.example'] ?? {}));
      expect(delivered).toEqual(rows.map((r) => r.deviceId));
    }
  });

  it('never puts two messages for one device, or two senders/types, in one EDU', () => {
    const rows = [row(1, 'D', 10), row(2, 'D', 10), row(3, 'E', 10, { type: 'm.other' }), row(4, 'F', 10, { sender: '@carol:local.example' })];
    const packed = directOnly(packEdus(rows, inOrder));
    expect(packed.edus.map((e) => [e.content.type, e.content.sender, Object.keys(e.content.messages['@bob:remote.example'] ?? {})])).toEqual([
      ['m.test', '@alice:local.example', ['D']],
      ['m.test', '@alice:local.example', ['D']],
      ['m.other', '@alice:local.example', ['E']],
      ['m.test', '@carol:local.example', ['F']],
    ]);
    const ids = packed.edus.map((e) => e.content.message_id);
    expect(new Set(ids).size).toBe(4);
    for (const id of ids) expect([...id].length).toBeLessThanOrEqual(32);
  });

  it('never puts * and another entry for the same user in one EDU (their order would be lost)', () => {
    const packed = directOnly(packEdus([row(1, 'D', 10), row(2, '*', 10), row(3, 'E', 10)], inOrder));
    expect(packed.edus.map((e) => Object.keys(e.content.messages['@bob:remote.example'] ?? {}))).toEqual([['D'], ['*'], ['E']]);
  });

  it('for a receiver that may reorder EDUs, carries one message per (sender, device) per transaction and leaves the rest in order', () => {
    const rows = [
      row(1, 'D', 10),
      row(2, 'D', 10),
      row(3, 'E', 10),
      row(4, 'D', 10, { sender: '@carol:local.example' }),
      row(5, '*', 10),
      row(6, 'F', 10, { userId: '@other:remote.example' }),
      row(7, 'E', 10),
    ];
    const packed = directOnly(packEdus(rows, anyOrder));
    // 2 (D again) waits; 5 (* for bob) waits, being after 1 and 3 for bob; 7 waits behind 5.
    expect(packed.streamIds).toEqual([1, 3, 4, 6]);
    const next = directOnly(packEdus(rows.filter((r) => !packed.streamIds.includes(r.streamId)), anyOrder));
    expect(next.streamIds).toEqual([2]);
  });

  it('shares EDUs between interleaved senders: 4 senders taking turns over 8 devices fill 4 EDUs, not 32', () => {
    const rows = Array.from({ length: 32 }, (_, i) => row(i + 1, `D${Math.floor(i / 4)}`, 10, { sender: `@s${i % 4}:local.example` }));
    for (const opts of [inOrder, anyOrder]) {
      const packed = directOnly(packEdus(rows, opts));
      expect(packed.streamIds).toEqual(rows.map((r) => r.streamId));
      expect(packed.edus.map((e) => [e.content.sender, Object.keys(e.content.messages['@bob:remote.example'] ?? {}).length])).toEqual([
        ['@s0:local.example', 8],
        ['@s1:local.example', 8],
        ['@s2:local.example', 8],
        ['@s3:local.example', 8],
      ]);
    }
  });

  it('keeps each (sender, device)\'s order (with *), one slot per device, ≤ 100 EDUs, in both modes (property)', () => {
    const arbRow = fc.record({
      user: fc.constantFrom('@u0:remote.example', '@u1:remote.example'),
      device: fc.constantFrom('A', 'B', 'C', '*'),
      sender: fc.constantFrom('@s0:local.example', '@s1:local.example'),
      type: fc.constantFrom('m.a', 'm.b'),
      bytes: fc.constantFrom(10, 10, 10, 20_000),
    });
    fc.assert(
      fc.property(fc.array(arbRow, { maxLength: 400 }), fc.boolean(), (specs, receiverAppliesInOrder) => {
        let rows = specs.map((x, i) =>
          row(i + 1, x.device, x.bytes, { userId: x.user, sender: x.sender, type: x.type, content: JSON.stringify({ n: i + 1, p: 'x'.repeat(x.bytes) }) }),
        );
        // Send transaction after transaction until the queue is empty, as the sender does.
        const applied: { user: string; device: string; n: number; sender: string; type: string }[] = [];
        const total = rows.length;
        for (let txns = 0; rows.length > 0; txns++) {
          expect(txns).toBeLessThan(total);
          const packed = directOnly(packEdus(rows, { receiverAppliesInOrder }));
          expect(packed.streamIds.length).toBeGreaterThan(0);
          expect(packed.edus.length).toBeLessThanOrEqual(100);
          const inTxn: typeof applied = [];
          // A receiver that applies in order sees the EDUs in order; another may see them in any
          // order, so then each (sender, device) may appear only once.
          for (const edu of packed.edus) {
            expect(Buffer.byteLength(canonicalJson(edu.content)) <= MAX_EDU_CONTENT_BYTES || Object.values(edu.content.messages).flatMap((m) => Object.keys(m)).length === 1).toBe(true);
            for (const [user, byDevice] of Object.entries(edu.content.messages)) {
              const devices = Object.keys(byDevice);
              if (devices.includes('*')) expect(devices).toEqual(['*']);
              for (const device of devices) inTxn.push({ user, device, n: byDevice[device]!.n as number, sender: edu.content.sender, type: edu.content.type });
            }
          }
          expect(inTxn.map((x) => x.n).sort((a, b) => a - b)).toEqual([...packed.streamIds].sort((a, b) => a - b));
          for (const x of inTxn) expect(rows.find((r) => r.streamId === x.n)).toMatchObject({ userId: x.user, deviceId: x.device, sender: x.sender, type: x.type });
          if (!receiverAppliesInOrder) {
            for (const x of inTxn) {
              const clashes = inTxn.filter((y) => y.sender === x.sender && y.user === x.user && (y.device === x.device || y.device === '*' || x.device === '*'));
              expect(clashes).toHaveLength(1);
            }
          }
          applied.push(...inTxn);
          rows = rows.filter((r) => !packed.streamIds.includes(r.streamId));
        }
        // For each sender and concrete device: the rows reaching it (its own and its user's *), in order.
        for (const sender of ['@s0:local.example', '@s1:local.example']) {
          for (const user of ['@u0:remote.example', '@u1:remote.example']) {
            for (const device of ['A', 'B', 'C']) {
              const reaches = (x: { sender: string; user: string; device: string }) => x.sender === sender && x.user === user && (x.device === device || x.device === '*');
              const expected = specs.map((x, i) => ({ ...x, n: i + 1 })).filter(reaches).map((x) => x.n);
              expect(applied.filter(reaches).map((x) => x.n)).toEqual(expected);
            }
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('stops at 100 EDUs per transaction, leaving the rest for the next', () => {
    const rows = Array.from({ length: 150 }, (_, i) => row(i + 1, 'SAME', 10));
    const packed = directOnly(packEdus(rows, inOrder));
    expect(packed.edus).toHaveLength(100);
    expect(packed.streamIds).toEqual(rows.slice(0, 100).map((r) => r.streamId));
    expect(directOnly(packEdus(rows, anyOrder)).streamIds).toEqual([1]);
  });
});

describe('server discovery', () => {
  const discovery = (wellKnown: Record<string, unknown>, srv: Record<string, { name: string; port: number }>) =>
    new ServerDiscovery({
      staticRoutes: { 'static.example': 'http://127.0.0.1:9999/' },
      allowHttp: false,
      fetchWellKnown: async (host) => wellKnown[host] ?? null,
      resolveSrv: async (name) => {
        const r = srv[name];
        if (r === undefined) throw new Error('ENOTFOUND');
        return [{ ...r, priority: 10, weight: 5 }];
      },
    });

  it('follows the spec order: static, IP/port, well-known, SRV, 8448', async () => {
    const d = discovery(
      { 'delegating.example': { 'm.server': 'matrix.delegating.example:443' }, 'srvdelegate.example': { 'm.server': 'inner.example' } },
      { '_matrix-fed._tcp.srv.example': { name: 'fed.srv.example', port: 8000 }, '_matrix._tcp.inner.example': { name: 'box.inner.example', port: 8009 } },
    );
    expect(await d.resolve('static.example')).toMatchObject({ baseUrl: 'http://127.0.0.1:9999' });
    expect(await d.resolve('1.2.3.4')).toMatchObject({ baseUrl: 'https://1.2.3.4:8448', host: '1.2.3.4' });
    expect(await d.resolve('[::1]:8080')).toMatchObject({ baseUrl: 'https://[::1]:8080', host: '[::1]:8080' });
    expect(await d.resolve('port.example:1234')).toMatchObject({ baseUrl: 'https://port.example:1234', host: 'port.example:1234' });
    expect(await d.resolve('delegating.example')).toEqual({
      baseUrl: 'https://matrix.delegating.example:443',
      host: 'matrix.delegating.example:443',
      tlsServerName: 'matrix.delegating.example',
    });
    expect(await d.resolve('srvdelegate.example')).toEqual({ baseUrl: 'https://box.inner.example:8009', host: 'inner.example', tlsServerName: 'inner.example' });
    expect(await d.resolve('srv.example')).toEqual({ baseUrl: 'https://fed.srv.example:8000', host: 'srv.example', tlsServerName: 'srv.example' });
    expect(await d.resolve('plain.example')).toEqual({ baseUrl: 'https://plain.example:8448', host: 'plain.example', tlsServerName: 'plain.example' });
  });
});
