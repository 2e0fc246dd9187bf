import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runScript } from './support/run-script.ts';
import { freePort, ServerProcess } from './support/server-process.ts';

// The examples promise to run against plain `npm start`: a real server process with no
// `handlers` key in its configuration, so whatever modules load by default.
let server: ServerProcess;

beforeAll(async () => {
  const port = await freePort();
  server = await ServerProcess.create(`localhost:${port}`, port, { metrics: { enabled: false } });
  await server.start();
}, 90_000);
afterAll(async () => {
  await server.destroy();
});

const run = (script: string) => runScript(script, { HOMESERVER: server.baseUrl });

describe('examples against the default configuration (npm start)', () => {
  it('examples/mls-chat.ts runs to the end: Welcome after acceptance, a raced commit rejected', async () => {
    const r = await run('examples/mls-chat.ts');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ {2}bob: Welcome received after acceptance → joined at epoch 1$/m);
    expect(r.stdout).toMatch(/^ {2}DS rejected (alice|bob)'s commit: wrong_epoch \(current epoch 2\)$/m);
  }, 180_000);

  it('examples/franking-report.ts: verified report and forgeries refused; no moderator is configured, and it says so', async () => {
    const r = await run('examples/franking-report.ts');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^bob reports the message → verdict: verified \(report #\d+\)$/m);
    expect(r.stdout).toMatch(/^moderator cannot list reports: 403 M_FORBIDDEN/m);
    expect(r.stdout).toContain('forged report (message changed) → verdict: rejected (franking_tag_mismatch)');
  }, 120_000);
});
