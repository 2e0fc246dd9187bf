import semver from 'semver';
import type { Surface } from './sdk-surface.ts';

/**
 * Whether the SDK's surface may have become `current` under `version`: unchanged, or changed
 * with the bump the change needs (docs/modules.md, "Versioning": an addition needs at least a
 * minor version, a removal or a changed declaration a major one). Null when it may; else why not.
 */
export function surfaceVerdict(recorded: Surface, current: Record<string, string>, version: string): string | null {
  const removed = Object.keys(recorded.exports).filter((k) => !(k in current));
  const added = Object.keys(current).filter((k) => !(k in recorded.exports));
  const changed = Object.keys(current).filter((k) => k in recorded.exports && recorded.exports[k] !== current[k]);
  if (removed.length + added.length + changed.length === 0) return null;
  const what = [...removed.map((k) => `removed ${k}`), ...changed.map((k) => `changed ${k}`), ...added.map((k) => `added ${k}`)].join('; ');
  const breaking = removed.length + changed.length > 0;
  const bump = semver.valid(version) === null || semver.lte(version, recorded.version) ? null : semver.diff(recorded.version, version);
  const enough = bump === 'major' || bump === 'premajor' || (!breaking && (bump === 'minor' || bump === 'preminor'));
  if (enough) return `the SDK surface changed (${what}) and SDK_VERSION is ${version}: record it with \`npm run sdk:surface\``;
  return `the SDK surface changed (${what}) without ${breaking ? 'a major' : 'a minor'} version bump from ${recorded.version} (SDK_VERSION is ${version}): see docs/modules.md, "Versioning"`;
}
