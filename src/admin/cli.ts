import { ConfigError, loadConfig } from '../config/config.ts';
import { DataDirLockedError } from '../storage/drivers/data-dir-lock.ts';
import { openDatabase } from '../storage/drivers/database.ts';
import { runAdmin, USAGE } from './commands.ts';

/**
 * `npm run admin -- <command>`: the admin CLI, on the database of the server's configuration
 * (CONFIG_FILE and the environment, as for the server). PGlite is single-process: on a PGlite
 * data directory that a running server holds, it fails at once (exit 1) and says how to run it.
 */
async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  if (argv.length === 0 || argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    return argv.length === 0 ? 2 : 0;
  }
  let config;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(e.message);
      return 1;
    }
    throw e;
  }
  let database;
  try {
    database = await openDatabase(
      config.database.kind === 'postgres'
        ? { kind: 'postgres', url: config.database.url, listenUrl: config.database.listenUrl, poolSize: 2, preparedStatements: config.database.preparedStatements }
        : { kind: 'pglite', dataDir: config.database.dataDir, fsync: config.database.fsync },
    );
  } catch (e) {
    if (!(e instanceof DataDirLockedError)) throw e;
    // Never echo a password given on the command line.
    const shown = argv.map((a, i) => (argv[i - 1] === '--password' ? "'…'" : a));
    console.error(
      `admin: nothing was done. ${e.message}\n` +
        'To run this command: stop the server (SIGTERM), run ' +
        `\`npm run admin -- ${shown.join(' ')}\` again, then start the server; ` +
        'or run the server on PostgreSQL, where the CLI works beside running servers.',
    );
    return 1;
  }
  try {
    return await runAdmin(argv, { config, database, out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) });
  } finally {
    await database.close();
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error('admin:', e instanceof Error ? e.message : e);
    process.exit(1);
  },
);
