import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MODULE_ERROR_CODES, SDK_VERSION } from '../src/sdk/index.ts';
import { currentSurface, recordedSurface } from './support/sdk-surface.ts';
import { surfaceVerdict } from './support/surface-verdict.ts';

describe('the SDK surface (matrix-to-device-server/sdk and /testing)', () => {
  it('is what was recorded for this SDK version (test/fixtures/sdk-surface.json)', () => {
    const recorded = recordedSurface();
    // Null when unchanged; otherwise the message says which bump the change needs.
    expect(surfaceVerdict(recorded, currentSurface(), SDK_VERSION)).toBeNull();
    expect(recorded.version).toBe(SDK_VERSION);
  }, 60_000);

  it('asks for a minor bump for an addition and a major one for a removal or change', () => {
    const recorded = { version: '1.2.0', exports: { 'sdk:a': 'x', 'sdk:b': 'y' } };
    expect(surfaceVerdict(recorded, { 'sdk:a': 'x', 'sdk:b': 'y' }, '1.2.0')).toBeNull();
    expect(surfaceVerdict(recorded, { 'sdk:a': 'x', 'sdk:b': 'y', 'sdk:c': 'z' }, '1.2.0')).toMatch(/added sdk:c.*without a minor version bump/);
    expect(surfaceVerdict(recorded, { 'sdk:a': 'x', 'sdk:b': 'y', 'sdk:c': 'z' }, '1.2.1')).toMatch(/without a minor/);
    expect(surfaceVerdict(recorded, { 'sdk:a': 'x', 'sdk:b': 'y', 'sdk:c': 'z' }, '1.3.0')).toMatch(/record it/);
    expect(surfaceVerdict(recorded, { 'sdk:a': 'x' }, '1.3.0')).toMatch(/removed sdk:b.*without a major version bump/);
    expect(surfaceVerdict(recorded, { 'sdk:a': 'x', 'sdk:b': 'changed' }, '1.3.0')).toMatch(/changed sdk:b.*without a major/);
    expect(surfaceVerdict(recorded, { 'sdk:a': 'x' }, '2.0.0')).toMatch(/record it/);
  });

  it('is the package version, which npm sees', () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(SDK_VERSION).toBe(pkg.version);
  });

  it('documents every module error code in docs/modules.md, and no code that does not exist', () => {
    const guide = readFileSync(new URL('../docs/modules.md', import.meta.url), 'utf8');
    const documented = new Set([...guide.matchAll(/^\| `(TDS_ERR_[A-Z_]+)` \|/gm)].map((m) => m[1]));
    expect([...documented].sort()).toEqual(Object.keys(MODULE_ERROR_CODES).sort());
  });

  it('re-exports only from src/sdk/, src/shared/ and src/errors/, never from the internals', () => {
    const index = readFileSync(new URL('../src/sdk/index.ts', import.meta.url), 'utf8');
    const sources = [...index.matchAll(/from '([^']+)'/g)].map((m) => m[1] as string);
    expect(sources.length).toBeGreaterThan(5);
    for (const source of sources) expect(source).toMatch(/^\.\/|^\.\.\/shared\/|^\.\.\/errors\//);
  });
});
