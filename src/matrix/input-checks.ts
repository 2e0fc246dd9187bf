/**
 * The one check for hostile text, wherever an identifier or content enters (client API bodies,
 * paths and queries, inbound federation EDUs, appservice requests):
 *
 * - NUL (U+0000): PostgreSQL cannot store it in `text`, so it would fail the request with a
 *   database error, or be stored by one driver and not another;
 * - lone UTF-16 surrogates (`"\ud800"`): not Unicode, so not valid UTF-8 canonical JSON, and a
 *   peer receiving them over federation could not verify a signature over them;
 * - nesting deeper than a limit: canonical JSON (and any recursive reader) would overflow the
 *   stack (a 100,000-deep body was a 500 RangeError);
 * - numbers that canonical JSON does not allow: `1.5`, but also `1.0`, `1e2` and `-0`, which
 *   JSON.parse turns into integers so that only the raw text tells them apart.
 */

/**
 * How deep a client request body may nest (objects and arrays, the body itself is level 1).
 * To-device content sits at level 4 of a sendToDevice body, so content itself may nest 97 deep:
 * far beyond what any Matrix event type uses, far below what overflows a recursive encoder.
 */
export const MAX_CLIENT_JSON_DEPTH = 100;

/**
 * How deep a federation transaction may nest. A transaction wraps each content 3 levels deeper
 * than a sendToDevice body does, so what a client here may send still fits when it is relayed to
 * another server of this kind; the check there only guards against overflowing the stack.
 */
export const MAX_FEDERATION_JSON_DEPTH = 256;

export interface JsonTextRules {
  maxDepth: number;
  /** Refuse NUL and lone surrogates in strings and keys. */
  unicode: boolean;
  /** Refuse numbers canonical JSON does not allow: fractions, exponents, `-0`. */
  integersOnly: boolean;
}

const BACKSLASH = 0x5c;
const QUOTE = 0x22;

function hex4(text: string, at: number): number {
  return Number.parseInt(text.slice(at, at + 4), 16);
}

/**
 * What is wrong with a JSON text by `rules`, or null. The text must already be known to be valid
 * JSON (JSON.parse accepted it) and to come from UTF-8 (so lone surrogates can only be written
 * as `\u` escapes; a final isWellFormed() covers anything else).
 *
 * Hot path of every request body: one pass over the structure, while string contents are skipped
 * with indexOf (native) from one quote or backslash to the next. A 64 KiB body of ciphertext
 * costs a few microseconds.
 */
export function jsonTextProblem(text: string, rules: JsonTextRules): string | null {
  let depth = 0;
  const n = text.length;
  let i = 0;
  // Position of the next backslash at or after i, or n; refreshed only when passed.
  let nextBackslash = -1;
  while (i < n) {
    const ch = text.charCodeAt(i);
    if (ch === QUOTE) {
      // Skip the string, looking only at its escapes.
      let j = i + 1;
      for (;;) {
        const quote = text.indexOf('"', j);
        if (quote === -1) return 'has an unterminated string';
        if (nextBackslash < j) {
          nextBackslash = text.indexOf('\\', j);
          if (nextBackslash === -1) nextBackslash = n;
        }
        if (nextBackslash > quote) {
          j = quote + 1;
          break;
        }
        const esc = nextBackslash;
        if (text.charCodeAt(esc + 1) === 0x75 /* u */) {
          if (rules.unicode) {
            const cp = hex4(text, esc + 2);
            if (cp === 0) return 'contains a NUL character (\\u0000)';
            if (cp >= 0xdc00 && cp <= 0xdfff) return 'contains a lone UTF-16 surrogate (not Unicode)';
            if (cp >= 0xd800 && cp <= 0xdbff) {
              const low = text.charCodeAt(esc + 6) === BACKSLASH && text.charCodeAt(esc + 7) === 0x75 ? hex4(text, esc + 8) : -1;
              if (!(low >= 0xdc00 && low <= 0xdfff)) return 'contains a lone UTF-16 surrogate (not Unicode)';
              j = esc + 12;
              continue;
            }
          }
          j = esc + 6;
        } else {
          j = esc + 2;
        }
      }
      i = j;
      continue;
    }
    if (ch === 0x7b /* { */ || ch === 0x5b /* [ */) {
      depth += 1;
      if (depth > rules.maxDepth) return `nests deeper than ${rules.maxDepth} levels`;
    } else if (ch === 0x7d /* } */ || ch === 0x5d /* ] */) {
      depth -= 1;
    } else if (rules.integersOnly) {
      // Outside strings, "." appears only in numbers; "e"/"E" also in true/false, but there not
      // after a digit.
      if (ch === 0x2e /* . */) return `has a number with a fraction (${numberAround(text, i)}); canonical JSON allows only integers`;
      if ((ch === 0x65 || ch === 0x45) && isDigit(text.charCodeAt(i - 1))) {
        return `has a number with an exponent (${numberAround(text, i)}); canonical JSON allows only integers`;
      }
      if (ch === 0x2d /* - */ && text.charCodeAt(i + 1) === 0x30 && !isDigit(text.charCodeAt(i + 2))) {
        const after = text.charCodeAt(i + 2);
        // -0.5 and -0e1 are reported by the rules above.
        if (after !== 0x2e && after !== 0x65 && after !== 0x45) return 'has -0; canonical JSON allows only integers';
      }
    }
    i += 1;
  }
  if (rules.unicode && !isWellFormed(text)) return 'contains a lone UTF-16 surrogate (not Unicode)';
  return null;
}

// String.prototype.isWellFormed (Node 20+, native); the project's TypeScript lib predates it.
function isWellFormed(s: string): boolean {
  return (s as unknown as { isWellFormed(): boolean }).isWellFormed();
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function numberAround(text: string, at: number): string {
  let start = at;
  while (start > 0 && /[-+0-9.eE]/.test(text[start - 1] ?? '')) start -= 1;
  let end = at;
  while (end < text.length && /[-+0-9.eE]/.test(text[end] ?? '')) end += 1;
  return text.slice(start, Math.min(end, start + 40));
}

/** What is wrong with one identifier or string (NUL, lone surrogates), or null. */
export function textProblem(s: string): string | null {
  if (s.includes('\u0000')) return 'contains a NUL character (\\u0000)';
  if (!isWellFormed(s)) return 'contains a lone UTF-16 surrogate (not Unicode)';
  return null;
}

/**
 * The same rules for a value already parsed (an inbound EDU's content), without recursion:
 * every key and string is checked, and nesting is bounded by `maxDepth`. Number forms cannot be
 * told apart any more; canonical JSON encoding refuses the non-integers that remain.
 */
export function jsonValueProblem(value: unknown, maxDepth: number): string | null {
  const stack: { v: unknown; depth: number }[] = [{ v: value, depth: 1 }];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const { v, depth } = item;
    if (typeof v === 'string') {
      const p = textProblem(v);
      if (p !== null) return p;
    } else if (typeof v === 'object' && v !== null) {
      if (depth > maxDepth) return `nests deeper than ${maxDepth} levels`;
      if (Array.isArray(v)) {
        for (const x of v) stack.push({ v: x, depth: depth + 1 });
      } else {
        for (const [k, x] of Object.entries(v)) {
          const p = textProblem(k);
          if (p !== null) return p;
          stack.push({ v: x, depth: depth + 1 });
        }
      }
    }
  }
  return null;
}
