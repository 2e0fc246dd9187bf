import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const MIGRATIONS = fileURLToPath(new URL('../../drizzle', import.meta.url));
// Read by path: the package does not export its package.json, and vitest's global setup runner
// has no import.meta.resolve.
const PGLITE_PACKAGE = fileURLToPath(new URL('../../node_modules/@electric-sql/pglite/package.json', import.meta.url));

/**
 * Where the migrated PGlite cluster is kept for this tree: named by every migration file's
 * bytes and PGlite's version, so a changed migration or a new PGlite makes a new template
 * instead of reusing a stale one.
 */
export function pgliteTemplateFile(): string {
  const hash = createHash('sha256');
  for (const dir of [MIGRATIONS, join(MIGRATIONS, 'meta')]) {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      if (statSync(path).isFile()) hash.update(name).update(readFileSync(path));
    }
  }
  hash.update(readFileSync(PGLITE_PACKAGE));
  return join(tmpdir(), `matrix-to-device-tests-${hash.digest('hex').slice(0, 16)}.tar`);
}

/** The template's bytes, or null when no run has made it (a file run outside the app tier's setup). */
export async function readPgliteTemplate(): Promise<Blob | null> {
  try {
    return new Blob([await readFile(pgliteTemplateFile())]);
  } catch {
    return null;
  }
}

/** Writes the template beside its final name, then renames: a reader sees a whole file or none. */
export async function writePgliteTemplate(blob: Blob): Promise<void> {
  const file = pgliteTemplateFile();
  const partial = `${file}.${process.pid}.partial`;
  await writeFile(partial, new Uint8Array(await blob.arrayBuffer()));
  await rename(partial, file);
}
