import { createRequire } from 'node:module';
import { pino, stdTimeFunctions, type DestinationStream, type Logger as PinoLogger } from 'pino';
import type PinoPretty from 'pino-pretty';

/** pino-pretty, loaded only for `format: pretty`: every other process (JSON logs, a test kit) is spared its import. */
function pretty(options: PinoPretty.PrettyOptions): DestinationStream {
  return (createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty)(options);
}

/** Structured logging: one JSON object per line, never message contents or tokens. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/** `json`: one JSON object per line (for log shippers); `pretty`: coloured, human-readable lines. */
export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface LoggerOptions {
  format?: LogFormat;
  /** Receives each JSON line (without its newline) instead of stderr; for tests. */
  write?: (line: string) => void;
}

/**
 * Field names that never reach a log line, whoever logs them: a careless `log.info('…', body)`
 * must not leak a token, a password or a message's content. Values are replaced, keys kept.
 */
const REDACTED_KEYS = ['access_token', 'accessToken', 'token', 'password', 'authorization', 'content', 'messages', 'hs_token', 'as_token'];
const REDACT_PATHS = [...REDACTED_KEYS, ...REDACTED_KEYS.map((k) => `*.${k}`)];

/**
 * A pino logger behind the project's small Logger interface: `log.info(msg, fields)`. Lines are
 * `{"level":"info","time":"…","msg":"…",…fields}` on stderr, written synchronously so nothing is
 * lost when the process exits right after logging.
 */
export function createLogger(level: LogLevel, bound: Record<string, unknown> = {}, output: LoggerOptions | ((line: string) => void) = {}): Logger {
  const opts: LoggerOptions = typeof output === 'function' ? { write: output } : output;
  let destination: DestinationStream;
  if (opts.write !== undefined) {
    const write = opts.write;
    destination = { write: (line: string) => write(line.endsWith('\n') ? line.slice(0, -1) : line) };
  } else if (opts.format === 'pretty') {
    destination = pretty({ destination: 2, sync: true, colorize: process.stderr.isTTY, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' });
  } else {
    destination = pino.destination({ fd: 2, sync: true });
  }
  const root = pino(
    {
      level,
      base: null,
      timestamp: stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    },
    destination,
  );
  return wrap(Object.keys(bound).length === 0 ? root : root.child(bound));
}

function wrap(p: PinoLogger): Logger {
  return {
    debug: (msg, fields) => p.debug(fields ?? {}, msg),
    info: (msg, fields) => p.info(fields ?? {}, msg),
    warn: (msg, fields) => p.warn(fields ?? {}, msg),
    error: (msg, fields) => p.error(fields ?? {}, msg),
    child: (fields) => wrap(p.child(fields)),
  };
}
