/**
 * Matrix canonical JSON: object keys sorted by Unicode code point, no insignificant
 * whitespace, integers only (within ±(2^53 - 1)), UTF-8. Used for the per-message size cap and
 * for signing, so both sides of a federation link compute the same bytes.
 */
export class CanonicalJsonError extends Error {}

function compareCodePoints(a: string, b: string): number {
  // JS sorts by UTF-16 code units, which misorders astral characters against U+E000–U+FFFF.
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const ca = ia.next();
    const cb = ib.next();
    if (ca.done) return cb.done ? 0 : -1;
    if (cb.done) return 1;
    const d = (ca.value.codePointAt(0) ?? 0) - (cb.value.codePointAt(0) ?? 0);
    if (d !== 0) return d;
  }
}

function encode(value: unknown, out: string[]): void {
  if (value === null) {
    out.push('null');
  } else if (typeof value === 'boolean') {
    out.push(value ? 'true' : 'false');
  } else if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) {
      throw new CanonicalJsonError(`canonical JSON allows only integers within ±(2^53-1), got ${value}`);
    }
    out.push(String(value));
  } else if (typeof value === 'string') {
    out.push(JSON.stringify(value));
  } else if (Array.isArray(value)) {
    out.push('[');
    value.forEach((item, i) => {
      if (i > 0) out.push(',');
      encode(item, out);
    });
    out.push(']');
  } else if (typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort(compareCodePoints);
    out.push('{');
    keys.forEach((k, i) => {
      if (i > 0) out.push(',');
      out.push(JSON.stringify(k), ':');
      encode(obj[k], out);
    });
    out.push('}');
  } else {
    throw new CanonicalJsonError(`canonical JSON cannot encode a value of type ${typeof value}`);
  }
}

export function canonicalJson(value: unknown): string {
  const out: string[] = [];
  encode(value, out);
  return out.join('');
}

export function canonicalJsonByteLength(value: unknown): number {
  return Buffer.byteLength(canonicalJson(value), 'utf8');
}
