import { ConfigError, loadConfig } from '../config/config.ts';
import { DataDirLockedError } from '../storage/drivers/data-dir-lock.ts';
import { openDatabase } from '../storage/drivers/database.ts';
import { runCommand } from './commands.ts';
import { needsDatabase, parseAdminArgs, USAGE } from './usage.ts';

/**
 * `npm run admin -- <command>`: the admin CLI, on the database of the server's configuration
 * (CONFIG_FILE and the environment, as for the server). The command line is checked first (exit
 * 2, nothing opened). PGlite is single-process: a command that needs the database fails at once
 * (exit 1) on a data directory that a running server holds, and says how to run it; `handlers`
 * needs none and asks the running server.
 */
async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const parsed = parseAdminArgs(argv);
  if (parsed.kind === 'help') {
    process.stdout.write(USAGE);
    return parsed.exitCode;
  }
  if (parsed.kind === 'usage') {
    process.stderr.write(`admin: ${parsed.message}\n\n${USAGE}`);
    return 2;
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
  const io = { config, out: (t: string) => process.stdout.write(t), err: (t: string) => process.stderr.write(t) };
  if (!needsDatabase(parsed.command)) return runCommand(parsed, { ...io, database: null });
  let database;
  try {
    database = await openDatabase(
      config.database.kind === 'postgres'
        ? { kind: 'postgres', url: config.database.url, listenUrl: config.database.listenUrl, poolSize: 2, preparedStatements: config.database.preparedStatements }
        : { kind: 'pglite', dataDir: config.database.dataDir, fsync: config.database.fsync, sharedBuffersMb: config.database.sharedBuffersMb },
    );
  } catch (e) {
    if (!(e instanceof DataDirLockedError)) throw e;
    // Never echo a password given on the command line.
    const shown = argv.map((a, i) => (argv[i - 1] === '--password' ? "'…'" : a.startsWith('--password=') ? "--password='…'" : a));
    console.error(
      `admin: nothing was done. ${e.message}\n` +
        'To run this command: stop the server (SIGTERM), run ' +
        `\`npm run admin -- ${shown.join(' ')}\` again, then start the server; ` +
        'or run the server on PostgreSQL, where the CLI works beside running servers.',
    );
    return 1;
  }
  try {
    return await runCommand(parsed, { ...io, database });
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
