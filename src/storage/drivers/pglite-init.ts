import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Creates the PGlite cluster of a fresh data directory in a child process, so that the server
 * opens an existing one.
 *
 * Why: PGlite 0.5 creates a cluster with a second, temporary PGlite instance (initdb runs in its
 * own WebAssembly memory) and copies the result in through a tarball. All of that is garbage once
 * the database is open, but V8 has no reason to collect it in an idle server: `npm start` on a
 * fresh directory idled at ~800 MB RSS, and the same server restarted on that directory at less
 * than half. A child's memory is returned to the OS when it exits.
 *
 * The child uses PGlite's own options: the cluster it writes is the same whatever the server
 * opens it with (durability is the server's start parameters and file system, see
 * pglite-durable.ts).
 */
export async function initDataDirApart(dataDir: string): Promise<void> {
  if (existsSync(join(dataDir, 'PG_VERSION'))) return;
  // The child resolves nothing itself: it may run from any working directory, and with no loader.
  const pglite = import.meta.resolve('@electric-sql/pglite');
  const script = `const { PGlite } = await import(${JSON.stringify(pglite)}); const pg = new PGlite(process.argv[1]); await pg.waitReady; await pg.close();`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, dataDir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (c) => resolve(c));
  });
  if (code !== 0 || !existsSync(join(dataDir, 'PG_VERSION'))) {
    throw new Error(`creating the PGlite database in ${dataDir} failed (exit ${code}): ${stderr.trim().split('\n').slice(-5).join('\n') || 'no output'}`);
  }
}
