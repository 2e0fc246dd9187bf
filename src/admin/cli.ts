import { ConfigError, loadConfig } from '../config/config.ts';
import { openDatabase } from '../storage/database.ts';
import { runAdmin, USAGE } from './commands.ts';

/**
 * `npm run admin -- <command>`: the admin CLI, on the database of the server's configuration
 * (CONFIG_FILE and the environment, as for the server). PGlite is single-process: stop the
 * server before running it on a PGlite data directory.
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
  const database = await openDatabase(
    config.database.kind === 'postgres'
      ? { kind: 'postgres', url: config.database.url, poolSize: 2, preparedStatements: config.database.preparedStatements }
      : { kind: 'pglite', dataDir: config.database.dataDir },
  );
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
