import { fsyncSync } from 'node:fs';
import type { PGliteOptions } from '@electric-sql/pglite';
import { PGlite } from '@electric-sql/pglite';
import { NodeFS } from '@electric-sql/pglite/nodefs';

/**
 * PGlite's defaults are not crash-safe against the OS: it starts PostgreSQL with `-F` (fsync
 * off), and even with fsync on, its Emscripten file system for Node (NODEFS) has no `fsync`
 * operation and its `fdatasync` is a no-op, so nothing reaches the disk before the page cache is
 * written back. Writes do reach the OS at once (NODEFS writes with `fs.writeSync`), so a
 * process crash loses nothing; an OS crash or power loss can lose commits that were answered.
 *
 * Durable mode gives NODEFS a real `fsync` (`fs.fsyncSync` on the file's descriptor), starts
 * PostgreSQL without `-F`, and has the WAL flushed with `fsync` (which reaches that operation;
 * `fdatasync` would not): every commit is on disk before it is acknowledged. Measured here
 * (docs/guarantees.md): a few hundred microseconds more per commit.
 */
class FsyncingNodeFS extends NodeFS {
  override async init(pg: PGlite, opts: Parameters<NodeFS['init']>[1]): ReturnType<NodeFS['init']> {
    const result = await super.init(pg, opts);
    const preRun = (result.emscriptenOpts as { preRun?: ((mod: EmscriptenModule) => void)[] }).preRun ?? [];
    preRun.push((mod) => {
      mod.NODEFS.stream_ops.fsync = (stream: { nfd: number }) => {
        fsyncSync(stream.nfd);
        return 0;
      };
    });
    (result.emscriptenOpts as { preRun?: unknown }).preRun = preRun;
    return result;
  }
}

interface EmscriptenModule {
  NODEFS: { stream_ops: { fsync?: (stream: { nfd: number }) => number } };
}

/**
 * Memory: PGlite makes its whole buffer pool resident as it starts (idle RSS grows by about the
 * pool's size), so shared_buffers is what an operator can trade. Below the working set of the
 * device queues, every page read goes through the Emscripten file system to the OS page cache:
 * draining a backlog larger than the pool was measured 1.5-2.5 times slower at 16 or 32 MB than
 * at 128 MB, so the default stays PostgreSQL's 128 MB. wal_buffers is pinned at the 4 MB that
 * 128 MB gives it (it would shrink with the pool): a group commit writes its batch's WAL at once.
 * PGlite's WebAssembly memory cannot start below 128 MB (a smaller `initialMemory` is refused);
 * its untouched pages cost nothing.
 */
function memoryParams(sharedBuffersMb: number): string[] {
  return ['-c', `shared_buffers=${sharedBuffersMb}MB`, '-c', 'wal_buffers=4MB'];
}

/**
 * PGlite options for `dataDir`: durable (fsync on every commit) or PGlite's own fsync settings;
 * `sharedBuffersMb` as above (128 is PostgreSQL's default).
 */
export function pgliteOptions(dataDir: string, fsync: boolean, sharedBuffersMb = 128): PGliteOptions {
  const defaults = (PGlite as unknown as { defaultStartParams?: string[] }).defaultStartParams;
  if (defaults === undefined) throw new Error('this PGlite version does not expose its start parameters; the server cannot configure it');
  if (!fsync) return { dataDir, startParams: [...defaults, ...memoryParams(sharedBuffersMb)] };
  return {
    fs: new FsyncingNodeFS(dataDir),
    startParams: [...defaults.filter((p) => p !== '-F'), '-c', 'fsync=on', '-c', 'wal_sync_method=fsync', ...memoryParams(sharedBuffersMb)],
  };
}
