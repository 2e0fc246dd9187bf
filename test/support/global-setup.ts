import { existsSync } from 'node:fs';
import { openDatabase } from '../../src/storage/drivers/database.ts';
import { pgliteTemplateFile, writePgliteTemplate } from './pglite-template.ts';

/**
 * Migrates one PGlite cluster before the app tier starts, kept as a tarball that every test
 * database starts from (test-database.ts): migrating an empty cluster took 3–20 s per database
 * on this machine depending on load, loading the migrated one about a tenth of that. The
 * migrations still run on each copy, so a template missing one would be brought up to date.
 */
export default async function setup(): Promise<void> {
  if ((process.env.TEST_DATABASE_URL ?? '') !== '' || existsSync(pgliteTemplateFile())) return;
  const database = await openDatabase({ kind: 'pglite', dataDir: null });
  try {
    await writePgliteTemplate(await (database.dumpDataDir as () => Promise<Blob>)());
  } finally {
    await database.close();
  }
}
