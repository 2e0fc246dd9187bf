import { describe, expect, it } from 'vitest';
import { canonicalJson, CanonicalJsonError } from '../src/matrix/canonical-json.ts';
import { parseUserId } from '../src/matrix/user-id.ts';

describe('canonical JSON (spec appendix examples)', () => {
  it.each([
    [{}, '{}'],
    [{ one: 1, two: 'Two' }, '{"one":1,"two":"Two"}'],
    [{ b: '2', a: '1' }, '{"a":"1","b":"2"}'],
    [
      { auth: { success: true, mxid: '@john.doe:example.com', profile: { display_name: 'John Doe', three_pids: [{ medium: 'email', address: 'john.doe@example.org' }, { medium: 'msisdn', address: '123456789' }] } } },
      '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ],
    [{ a: '日本語' }, '{"a":"日本語"}'],
    [{ 本: 2, 日: 1 }, '{"日":1,"本":2}'],
    [{ a: '\u65E5' }, '{"a":"日"}'],
    [{ a: null }, '{"a":null}'],
    [{ a: -0 }, '{"a":0}'],
  ])('%j', (input, expected) => {
    expect(canonicalJson(input)).toBe(expected);
  });

  it('orders keys by code point, not UTF-16 unit (astral vs U+FFxx)', () => {
    // U+1F600 is a surrogate pair starting 0xD83D, which UTF-16 sorting puts before U+FF21.
    expect(canonicalJson({ '\uFF21': 1, '😀': 2 })).toBe('{"Ａ":1,"😀":2}');
  });

  it('refuses floats and integers beyond ±(2^53−1)', () => {
    expect(() => canonicalJson({ a: 1.5 })).toThrow(CanonicalJsonError);
    expect(() => canonicalJson({ a: 2 ** 53 })).toThrow(CanonicalJsonError);
    expect(canonicalJson({ a: 2 ** 53 - 1 })).toBe('{"a":9007199254740991}');
  });
});

describe('user IDs', () => {
  it('parses valid and historical IDs and rejects malformed ones', () => {
    expect(parseUserId('@alice:example.org')).toEqual({ localpart: 'alice', serverName: 'example.org' });
    expect(parseUserId('@Old_Style!:example.org:8448')).toEqual({ localpart: 'Old_Style!', serverName: 'example.org:8448' });
    for (const bad of ['alice:example.org', '@alice', '@ali ce:example.org', '@alice:bad host', `@${'a'.repeat(250)}:example.org`]) {
      expect(parseUserId(bad)).toBeNull();
    }
  });

  it('accepts the empty localpart only when asked to (MSC4246 server user)', () => {
    expect(parseUserId('@:example.org')).toBeNull();
    expect(parseUserId('@:example.org', { allowEmptyLocalpart: true })).toEqual({ localpart: '', serverName: 'example.org' });
  });
});
