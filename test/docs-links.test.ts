import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * Every relative link in README.md and docs/**\/*.md (and in the READMEs of handlers/ and
 * examples/) points to a file that exists, and every `#anchor` (in the same file or another) is
 * the GitHub slug of a heading in its target. docs/api/ is left out: TypeDoc writes it
 * (`npm run docs:api`) and git ignores it; so are node_modules/ and dist/.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SKIPPED = new Set(['node_modules', 'dist', path.join('docs', 'api')]);

/** README.md, every .md file under docs/, and every README.md under handlers/ and examples/, relative to root. */
function documents(root: string): string[] {
  const found = ['README.md'];
  const walk = (dir: string, keep: (name: string) => boolean): void => {
    if (!existsSync(path.join(root, dir))) return;
    for (const entry of readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        if (!SKIPPED.has(entry.name) && !SKIPPED.has(rel)) walk(rel, keep);
      } else if (keep(entry.name)) found.push(rel);
    }
  };
  walk('docs', (name) => name.endsWith('.md'));
  walk('handlers', (name) => name === 'README.md');
  walk('examples', (name) => name === 'README.md');
  return found;
}

/** The lines of a Markdown text outside fenced code blocks, with inline code spans blanked. */
function prose(text: string): string[] {
  const lines: string[] = [];
  let fence: string | null = null;
  for (const line of text.split('\n')) {
    const marker = /^\s{0,3}(`{3,}|~{3,})/.exec(line)?.[1];
    if (fence !== null) {
      if (marker !== undefined && marker[0] === fence[0] && marker.length >= fence.length) fence = null;
      lines.push('');
    } else if (marker !== undefined) {
      fence = marker;
      lines.push('');
    } else {
      lines.push(line.replace(/(`+)[\s\S]*?\1/g, (span) => ' '.repeat(span.length)));
    }
  }
  return lines;
}

/** GitHub's heading slug: the heading's text, lower case, punctuation dropped, spaces to hyphens. */
export function slug(heading: string): string {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // a link or image: its text
    .replace(/<[^>]+>/g, '') // inline HTML tags
    // Outside code spans, underscores that open or close emphasis go (snake_case stays); `*`, `~`
    // and backticks are punctuation, dropped below like any other.
    .split(/(`+[^`]*`+)/)
    .map((part, i) => (i % 2 === 1 ? part : part.replace(/(?<!\w)_+(?=\S)|(?<=\S)_+(?!\w)/g, '')))
    .join('');
  return text
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-');
}

/** The anchors a Markdown file offers: its headings' slugs (repeats numbered as GitHub does) and HTML ids. */
function anchors(text: string): Set<string> {
  const found = new Set<string>();
  const seen = new Map<string, number>();
  const raw = text.split('\n');
  prose(text).forEach((line, i) => {
    const heading = /^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+\s*)?$/.exec(line);
    if (heading === null) return;
    // Code spans were blanked for link-finding; the slug needs their text, so read the raw line.
    const base = slug(/^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+\s*)?$/.exec(raw[i] ?? '')?.[1] ?? '');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    found.add(n === 0 ? base : `${base}-${n}`);
  });
  for (const m of text.matchAll(/<a\s[^>]*(?:name|id)="([^"]+)"/g)) found.add(m[1] as string);
  return found;
}

/** The link targets of a Markdown text: inline links and images, and reference definitions. */
function linkTargets(text: string): { line: number; target: string }[] {
  const targets: { line: number; target: string }[] = [];
  prose(text).forEach((line, i) => {
    for (const m of line.matchAll(/\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)/g)) targets.push({ line: i + 1, target: m[1] as string });
    const definition = /^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$/.exec(line);
    if (definition !== null) targets.push({ line: i + 1, target: definition[1] as string });
  });
  return targets;
}

/** Every relative link of the documents under root that points nowhere, as `file:line: target (why)`. */
export function brokenLinks(root: string): string[] {
  const broken: string[] = [];
  const anchorsOf = new Map<string, Set<string>>();
  const anchorsIn = (file: string): Set<string> => {
    let set = anchorsOf.get(file);
    if (set === undefined) {
      set = anchors(readFileSync(file, 'utf8'));
      anchorsOf.set(file, set);
    }
    return set;
  };
  for (const doc of documents(root)) {
    const file = path.join(root, doc);
    for (const { line, target } of linkTargets(readFileSync(file, 'utf8'))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//')) continue; // https:, mailto: …
      const hash = target.indexOf('#');
      const filePart = decodeURIComponent(hash === -1 ? target : target.slice(0, hash));
      const anchor = hash === -1 ? null : decodeURIComponent(target.slice(hash + 1));
      const where = `${doc}:${line}: ${target}`;
      if (filePart.startsWith('/')) {
        broken.push(`${where} (an absolute path; links are relative to the file)`);
        continue;
      }
      const resolved = filePart === '' ? file : path.resolve(path.dirname(file), filePart);
      if (!existsSync(resolved)) {
        broken.push(`${where} (no such file)`);
        continue;
      }
      if (anchor === null) continue;
      if (statSync(resolved).isDirectory() || !resolved.endsWith('.md')) {
        broken.push(`${where} (an anchor into something that is not a Markdown file)`);
      } else if (!anchorsIn(resolved).has(anchor)) {
        broken.push(`${where} (no heading with that anchor in ${path.relative(root, resolved)})`);
      }
    }
  }
  return broken;
}

describe('links in README.md, docs/ and the READMEs of handlers/ and examples/', () => {
  it('point to files that exist, and to headings that exist in them', () => {
    expect(brokenLinks(ROOT)).toEqual([]);
  });

  it('are found broken when a file or a heading is missing', () => {
    const root = mkdtempSync(path.join(tmpdir(), 'docs-links-'));
    try {
      mkdirSync(path.join(root, 'docs'));
      writeFileSync(
        path.join(root, 'README.md'),
        [
          '# Title',
          '## Quick start',
          'See [ok](docs/a.md), [ok](docs/a.md#the-server-user-msc4246-and-handler-modules),',
          '[ok](#quick-start), [ok](https://example.org/x.md#nowhere), [missing](docs/b.md).',
          '`[in code](docs/c.md)` and',
          '```',
          '[in a fence](docs/d.md)',
          '```',
          '[bad anchor](docs/a.md#nowhere) [bad here](#title-2)',
          '[ref]: docs/e.md',
        ].join('\n'),
      );
      writeFileSync(
        path.join(root, 'docs', 'a.md'),
        ['# The server user (MSC4246) and handler modules', '## `limits.*` settings', '## Again', '## Again', '[up](../README.md#title) [dup](#again-1) [code](#limits-settings) [x](#again-2)'].join('\n'),
      );
      expect(brokenLinks(root)).toEqual([
        'README.md:4: docs/b.md (no such file)',
        'README.md:9: docs/a.md#nowhere (no heading with that anchor in docs/a.md)',
        'README.md:9: #title-2 (no heading with that anchor in README.md)',
        'README.md:10: docs/e.md (no such file)',
        'docs/a.md:5: #again-2 (no heading with that anchor in docs/a.md)',
      ]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('are compared with headings by GitHub\'s slugs', () => {
    expect(slug('Verified against Synapse 1.67.0')).toBe('verified-against-synapse-1670');
    expect(slug('The server user (MSC4246) and handler modules')).toBe('the-server-user-msc4246-and-handler-modules');
    expect(slug('Deployment: several processes, one PostgreSQL')).toBe('deployment-several-processes-one-postgresql');
    expect(slug('Claims with parameters (one-time-key algorithms of modules)')).toBe('claims-with-parameters-one-time-key-algorithms-of-modules');
    expect(slug('KeyPackages (MSC4244 §KeyPackages)')).toBe('keypackages-msc4244-keypackages');
    expect(slug('The committed run (2026-12-05, commit fbb6162)')).toBe('the-committed-run-2026-12-05-commit-fbb6162');
    expect(slug('`server_user.*` and **bold** _emphasis_')).toBe('server_user-and-bold-emphasis');
    expect(slug('Upload — `POST /_matrix/client/v3/keys/upload` (MSC4244, as specified)')).toBe('upload--post-_matrixclientv3keysupload-msc4244-as-specified');
  });
});
