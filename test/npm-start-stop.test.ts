import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { LOCK_FILE } from '../src/storage/drivers/data-dir-lock.ts';
import { freePort } from './support/server-process.ts';

/**
 * The README says `npm start` runs the server and SIGTERM stops it. npm hands its signals only to
 * its direct child, which was once a `sh -c` that died and left the server running, serving and
 * holding its PGlite directory. So: the real `npm start`, and the signal sent to npm's pid.
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tds-npm-stop-'));
const dataDir = join(dir, 'pglite');
let serverPid: number | null = null;

afterAll(() => {
  // Only if the test failed and left it running.
  if (serverPid !== null && isRunning(serverPid)) process.kill(serverPid, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function canListenOn(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

describe('npm start', () => {
  it('stops, server and all, when npm gets SIGTERM: the port and the PGlite directory are free again', async () => {
    const port = await freePort();
    const env: NodeJS.ProcessEnv = { ...process.env, CONFIG_FILE: '', DATABASE_URL: '', DATA_DIR: dataDir, LISTEN_PORT: String(port), METRICS_ENABLED: 'false', LOG_FORMAT: 'json' };
    const npm = spawn('npm', ['start'], { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    const exited = new Promise<number | null>((resolve) => npm.once('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`npm start did not start:\n${stderr}`)), 90_000);
      npm.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('"msg":"listening"')) {
          clearTimeout(timer);
          resolve();
        }
      });
      void exited.then((code) => reject(new Error(`npm start exited with ${code}:\n${stderr}`)));
    });
    // The lock names the process that holds the directory: the server, not npm.
    serverPid = (JSON.parse(readFileSync(join(dataDir, LOCK_FILE), 'utf8')) as { pid: number }).pid;
    expect(serverPid).not.toBe(npm.pid);
    expect(await canListenOn(port)).toBe(false);

    npm.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(stderr).toContain('"msg":"stopped"');
    expect(isRunning(serverPid)).toBe(false);
    expect(existsSync(join(dataDir, LOCK_FILE))).toBe(false);
    expect(await canListenOn(port)).toBe(true);
  }, 120_000);
});
