import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson, canonicalJsonByteLength, CanonicalJsonError } from '../src/shared/canonical-json.ts';
import { parseUserId } from '../src/shared/user-id.ts';

/**
 * The examples of the Matrix spec, appendices §"Canonical JSON" (matrix-org/matrix-spec,
 * content/appendices.md): input JSON text, expected canonical JSON text.
 */
const SPEC_VECTORS: [string, string][] = [
  ['{}', '{}'],
  ['{\n    "one": 1,\n    "two": "Two"\n}', '{"one":1,"two":"Two"}'],
  ['{\n    "b": "2",\n    "a": "1"\n}', '{"a":"1","b":"2"}'],
  ['{"b":"2","a":"1"}', '{"a":"1","b":"2"}'],
  [
    `{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}`,
    '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}',
  ],
  ['{\n    "a": "日本語"\n}', '{"a":"日本語"}'],
  ['{\n    "本": 2,\n    "日": 1\n}', '{"日":1,"本":2}'],
  ['{\n    "a": "\\u65E5"\n}', '{"a":"日"}'],
  ['{\n    "a": null\n}', '{"a":null}'],
  ['{\n    "a": -0,\n    "b": 1e10\n}', '{"a":0,"b":10000000000}'],
];

describe('canonical JSON: the spec appendix examples', () => {
  it.each(SPEC_VECTORS)('%s', (input, expected) => {
    expect(canonicalJson(JSON.parse(input))).toBe(expected);
  });

  it('the spec examples are UTF-8, not \\u escapes', () => {
    expect(canonicalJson({ a: '日本語' })).not.toContain('\\u');
    // {"a":""} is 8 bytes; each of the three characters is 3 bytes of UTF-8.
    expect(canonicalJsonByteLength({ a: '日本語' })).toBe(8 + 9);
  });
});

describe('canonical JSON: encoding', () => {
  it('escapes only what the grammar requires, with the short forms where there are some', () => {
    expect(canonicalJson({ s: '"\\\b\f\n\r\t' })).toBe('{"s":"\\"\\\\\\b\\f\\n\\r\\t"}');
    expect(canonicalJson({ s: '\u0000\u0001\u001f' })).toBe('{"s":"\\u0000\\u0001\\u001f"}');
    // No redundant escapes: '/', DEL, U+2028 and astral characters go out as themselves.
    expect(canonicalJson({ s: '/\u007f\u2028😀' })).toBe('{"s":"/\u007f\u2028😀"}');
  });

  it('keeps array order, sorts nested objects, and writes no whitespace', () => {
    expect(canonicalJson([3, { z: [{ y: 1, x: 2 }], a: true }, 'b', false, null])).toBe('[3,{"a":true,"z":[{"x":2,"y":1}]},"b",false,null]');
  });

  it('sorts integer-like keys as strings, not in JavaScript\'s numeric property order', () => {
    expect(canonicalJson({ b: 1, 10: 2, 9: 3, a: 4, 100: 5 })).toBe('{"10":2,"100":5,"9":3,"a":4,"b":1}');
  });

  it('orders keys by code point, not by UTF-16 code unit (astral vs U+FFxx)', () => {
    // U+1F600 is the surrogate pair D83D DE00: UTF-16 order would put it before U+FF21 and U+FFFF.
    expect(canonicalJson({ '😀': 3, '\uFFFF': 2, '\uFF21': 1 })).toBe('{"Ａ":1,"\uFFFF":2,"😀":3}');
    expect(canonicalJson({ '\u{10000}': 2, '\uE000': 1 })).toBe('{"\uE000":1,"\u{10000}":2}');
    // A key that is a prefix of another sorts first.
    expect(canonicalJson({ ab: 2, a: 1, '': 0 })).toBe('{"":0,"a":1,"ab":2}');
  });

  it('orders any keys like their UTF-8 bytes (which is code point order)', () => {
    const char = fc.constantFrom('a', 'b', 'Z', '0', '日', '\uE000', '\uFF21', '\uFFFF', '😀', '\u{10000}', '\u{10FFFF}', '\u0080');
    fc.assert(
      fc.property(fc.dictionary(fc.string({ unit: char, maxLength: 4 }), fc.integer(), { maxKeys: 12 }), (obj) => {
        const out = canonicalJson(obj);
        const keys = Object.keys(JSON.parse(out) as object);
        // JSON.parse rebuilds integer-like keys in numeric order; read the key order from the text.
        const order = [...out.matchAll(/"((?:[^"\\]|\\.)*)":/g)].map((m) => JSON.parse(`"${m[1]}"`) as string);
        const expected = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x, 'utf8'), Buffer.from(y, 'utf8')));
        expect(order).toEqual(expected);
        expect(JSON.parse(out)).toEqual(obj);
      }),
    );
  });

  it('drops undefined members, as JSON.stringify does', () => {
    expect(canonicalJson({ a: 1, b: undefined })).toBe('{"a":1}');
  });
});

describe('canonical JSON: numbers', () => {
  it('accepts integers within ±(2^53−1)', () => {
    expect(canonicalJson({ max: 2 ** 53 - 1, min: -(2 ** 53 - 1), zero: 0 })).toBe('{"max":9007199254740991,"min":-9007199254740991,"zero":0}');
    expect(canonicalJson(1e15)).toBe('1000000000000000');
  });

  it.each([
    ['a float', 1.5],
    ['a small float', 1e-7],
    ['2^53', 2 ** 53],
    ['-2^53', -(2 ** 53)],
    ['1e21', 1e21],
    ['NaN', NaN],
    ['Infinity', Infinity],
    ['-Infinity', -Infinity],
  ])('refuses %s, however deep', (_name, n) => {
    expect(() => canonicalJson(n)).toThrow(CanonicalJsonError);
    expect(() => canonicalJson({ a: [1, { b: n }] })).toThrow(CanonicalJsonError);
    expect(() => canonicalJsonByteLength({ a: n })).toThrow(CanonicalJsonError);
  });

  it('refuses values JSON cannot carry', () => {
    expect(() => canonicalJson({ a: 10n })).toThrow(CanonicalJsonError);
    expect(() => canonicalJson({ a: () => 1 })).toThrow(CanonicalJsonError);
    expect(() => canonicalJson(undefined)).toThrow(CanonicalJsonError);
    expect(() => canonicalJson([undefined])).toThrow(CanonicalJsonError);
  });
});

describe('parseUserId', () => {
  it('parses valid user IDs, with ports and IP literals', () => {
    expect(parseUserId('@alice:example.org')).toEqual({ localpart: 'alice', serverName: 'example.org' });
    expect(parseUserId('@a.b_c=d-e/f+g:example.org:8448')).toEqual({ localpart: 'a.b_c=d-e/f+g', serverName: 'example.org:8448' });
    expect(parseUserId('@bob:1.2.3.4:1234')).toEqual({ localpart: 'bob', serverName: '1.2.3.4:1234' });
    expect(parseUserId('@bob:[1234:5678::abcd]:5678')).toEqual({ localpart: 'bob', serverName: '[1234:5678::abcd]:5678' });
  });

  it('accepts historical localparts (printable ASCII other than ":")', () => {
    expect(parseUserId('@Old_Style!:example.org')).toEqual({ localpart: 'Old_Style!', serverName: 'example.org' });
    expect(parseUserId('@UPPER#$%&*~:example.org')).toEqual({ localpart: 'UPPER#$%&*~', serverName: 'example.org' });
  });

  it.each([
    ['no sigil', 'alice:example.org'],
    ['the wrong sigil', '!alice:example.org'],
    ['no server name', '@alice'],
    ['an empty server name', '@alice:'],
    ['a bad server name', '@alice:bad host'],
    ['a non-numeric port', '@alice:example.org:port'],
    ['a space in the localpart', '@ali ce:example.org'],
    ['the empty string', ''],
  ])('rejects %s', (_name, raw) => {
    expect(parseUserId(raw)).toBeNull();
  });

  it('allows at most 255 bytes', () => {
    const at255 = `@${'a'.repeat(255 - '@:example.org'.length)}:example.org`;
    expect(Buffer.byteLength(at255)).toBe(255);
    expect(parseUserId(at255)).toEqual({ localpart: 'a'.repeat(242), serverName: 'example.org' });
    expect(parseUserId(`@b${at255.slice(1)}`)).toBeNull();
    expect(parseUserId(`@${'a'.repeat(300)}:example.org`)).toBeNull();
  });

  it('accepts the empty localpart (MSC4246 server user) only when asked to', () => {
    expect(parseUserId('@:example.org')).toBeNull();
    expect(parseUserId('@:example.org', { allowEmptyLocalpart: false })).toBeNull();
    expect(parseUserId('@:example.org', { allowEmptyLocalpart: true })).toEqual({ localpart: '', serverName: 'example.org' });
    // Still needs a valid server name.
    expect(parseUserId('@:', { allowEmptyLocalpart: true })).toBeNull();
    expect(parseUserId('@:bad host', { allowEmptyLocalpart: true })).toBeNull();
  });
});
