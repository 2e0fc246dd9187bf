import { closeSync, openSync, readFileSync, realpathSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

/**
 * PGlite is a single-process database: two processes opening one data directory each keep their
 * own copy of the database in memory and overwrite each other's files (the admin CLI's
 * `create-user` once printed success while the running server never saw the user, and the user
 * was gone after the server stopped). So the process that opens a directory locks it with a
 * file beside PGlite's own, `matrix-to-device.lock`, naming the holder.
 *
 * A lock left by a process that was killed (SIGKILL, OOM, power loss) is stale and taken over:
 * on the same host, when its pid is not running, or runs a different process (its start time,
 * from /proc, differs: a container restart gives the new process the old pid). A lock of
 * another host (a shared network directory) cannot be checked and is honoured.
 */
export const LOCK_FILE = 'matrix-to-device.lock';

export interface LockHolder {
  pid: number;
  host: string;
  /** When the holder took the lock (ISO 8601). */
  startedAt: string;
  /** The holder's start time in clock ticks since boot (/proc/<pid>/stat), to tell a reused pid. */
  procStart: string | null;
  command: string;
}

export class DataDirLockedError extends Error {
  constructor(
    readonly dataDir: string,
    readonly lockFile: string,
    readonly holder: LockHolder | null,
  ) {
    const who =
      holder === null
        ? 'another process (its lock file is being written or unreadable)'
        : `pid ${holder.pid} on host ${holder.host}, since ${holder.startedAt} (${holder.command})`;
    super(
      `The PGlite data directory ${dataDir} is in use by ${who}. ` +
        'PGlite is single-process: two processes on one directory lose data. ' +
        'Stop that process first, or use PostgreSQL (database.url / DATABASE_URL) to run several processes. ' +
        `If that process is gone${holder !== null && holder.host !== hostname() ? ' (it ran on another host, which cannot be checked from here)' : ''}, delete ${lockFile}.`,
    );
    this.name = 'DataDirLockedError';
  }
}

/** Directories this process holds, so that a second open in the same process is refused too. */
const heldHere = new Set<string>();

function procStartOf(pid: number | 'self'): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime); fields are counted after the command name in parentheses.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function isRunning(holder: LockHolder, key: string): boolean {
  if (holder.host !== hostname()) return true;
  if (holder.pid === process.pid) return heldHere.has(key);
  try {
    process.kill(holder.pid, 0);
  } catch (e) {
    // EPERM: it exists, as another user.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  const start = procStartOf(holder.pid);
  return holder.procStart === null || start === null || start === holder.procStart;
}

function readHolder(file: string): { raw: string; holder: LockHolder | null } | null {
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  try {
    const h = JSON.parse(raw) as LockHolder;
    return { raw, holder: typeof h.pid === 'number' && typeof h.host === 'string' ? h : null };
  } catch {
    return { raw, holder: null };
  }
}

/**
 * Locks `dataDir` (which must exist) for this process, or throws DataDirLockedError naming the
 * holder. `release` removes the lock; it is also removed when the process exits normally.
 */
export function lockDataDir(dataDir: string): { release(): void } {
  const key = realpathSync(dataDir);
  const file = join(dataDir, LOCK_FILE);
  const me: LockHolder = {
    pid: process.pid,
    host: hostname(),
    startedAt: new Date().toISOString(),
    procStart: procStartOf('self'),
    command: process.argv.slice(1).join(' ').slice(0, 200),
  };
  const text = JSON.stringify(me);
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number;
    try {
      fd = openSync(file, 'wx');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const found = readHolder(file);
      if (found === null) continue; // removed meanwhile: try again
      // Unreadable: being written right now, or left empty by a process killed while writing it.
      const stale = found.holder === null ? Date.now() - statSync(file).mtimeMs > 10_000 : !isRunning(found.holder, key);
      if (!stale) throw new DataDirLockedError(dataDir, file, found.holder);
      // Stale. Remove it only if it is still the same lock (another starter may have replaced it).
      if (readHolder(file)?.raw === found.raw) unlinkSync(file);
      continue;
    }
    try {
      writeSync(fd, text);
    } finally {
      closeSync(fd);
    }
    heldHere.add(key);
    const release = () => {
      process.off('exit', release);
      heldHere.delete(key);
      try {
        if (readHolder(file)?.raw === text) unlinkSync(file);
      } catch {
        // Best effort: a lock left behind is stale and taken over by the next start.
      }
    };
    process.on('exit', release);
    return { release };
  }
  throw new DataDirLockedError(dataDir, file, readHolder(file)?.holder ?? null);
}
