import { parseArgs } from 'node:util';

export const USAGE = `Usage: npm run admin -- <command> [options]

Commands:
  create-user <localpart> (--password <pw> | --password-stdin)
  reset-password <user> (--password <pw> | --password-stdin) [--logout-devices]
  devices <user>                      the user's devices and their queue depths
  delete-device <user> <device_id>    delete a device, its token and its queued messages
  handlers [--metrics-url <url>]      handler modules, their event types and dispatch counters
                                      (read from the running server; works beside it on PGlite)
  queues                              device queue totals, federation and appservice queues

<user> is a full user ID (@alice:example.org) or a localpart (alice).
Options: --json  print JSON instead of text
Exit codes: 0 done, 1 failed (nothing or only part done, as printed), 2 bad usage (nothing done).
`;

/** Each command and how many positional arguments it takes. */
const ARITY = {
  'create-user': 1,
  'reset-password': 1,
  devices: 1,
  'delete-device': 2,
  handlers: 0,
  queues: 0,
} as const;

export type AdminCommandName = keyof typeof ARITY;

export interface AdminOptions {
  json: boolean;
  password: string | undefined;
  passwordStdin: boolean;
  logoutDevices: boolean;
  metricsUrl: string | undefined;
}

/** A command line that is well formed: the command exists and has what it needs. */
export interface AdminCommand {
  kind: 'command';
  command: AdminCommandName;
  args: string[];
  opts: AdminOptions;
}

export type ParsedAdmin =
  | AdminCommand
  | { kind: 'help'; exitCode: 0 | 2 }
  | { kind: 'usage'; message: string };

/** Commands that need no database: `handlers` reads the modules and the running server's metrics. */
export function needsDatabase(command: AdminCommandName): boolean {
  return command !== 'handlers';
}

/**
 * Checks a command line without touching anything, so that a typo is answered with exit code 2
 * before a database is opened (on PGlite, opening fails while the server runs, and that error
 * would hide the typo behind "stop the server and run it again").
 */
export function parseAdminArgs(argv: readonly string[]): ParsedAdmin {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        json: { type: 'boolean', default: false },
        password: { type: 'string' },
        'password-stdin': { type: 'boolean', default: false },
        'logout-devices': { type: 'boolean', default: false },
        'metrics-url': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    return { kind: 'usage', message: (e as Error).message };
  }
  const { values, positionals } = parsed;
  const [command, ...args] = positionals;
  if (values.help || command === 'help') return { kind: 'help', exitCode: 0 };
  if (command === undefined) return { kind: 'help', exitCode: 2 };
  if (!Object.hasOwn(ARITY, command)) return { kind: 'usage', message: `unknown command: ${command}` };
  const name = command as AdminCommandName;
  const n = ARITY[name];
  if (args.length !== n) return { kind: 'usage', message: `${name} takes ${n} argument${n === 1 ? '' : 's'}` };
  const opts: AdminOptions = {
    json: values.json,
    password: values.password,
    passwordStdin: values['password-stdin'],
    logoutDevices: values['logout-devices'],
    metricsUrl: values['metrics-url'],
  };
  if (name === 'create-user' || name === 'reset-password') {
    if (opts.password !== undefined && opts.passwordStdin) return { kind: 'usage', message: 'give --password or --password-stdin, not both' };
    if (opts.password === undefined && !opts.passwordStdin) return { kind: 'usage', message: `${name} needs --password <pw> or --password-stdin` };
  }
  if (opts.metricsUrl !== undefined && !URL.canParse(opts.metricsUrl)) return { kind: 'usage', message: `--metrics-url: not a URL: ${opts.metricsUrl}` };
  return { kind: 'command', command: name, args, opts };
}
