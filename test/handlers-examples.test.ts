import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import franking from '../handlers/franking/index.ts';
import mls from '../handlers/mls/index.ts';
import type { HandlerModule } from '../src/sdk/define-handler.ts';
import { serveOverHttp } from './support/http-server.ts';
import { runScript } from './support/run-script.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

let t: TestApp;
let http: Awaited<ReturnType<typeof serveOverHttp>>;

beforeAll(async () => {
  t = await startTestApp({}, [
    { module: mls as HandlerModule<unknown> },
    { module: franking as HandlerModule<unknown>, config: { moderators: [`@franking-moderator:${SERVER_NAME}`] } },
  ]);
  http = await serveOverHttp(t);
});
afterAll(async () => {
  await http.close();
  await t.close();
});

const run = (script: string) => runScript(script, { HOMESERVER: http.baseUrl });

describe('handler module examples over real HTTP', () => {
  it('examples/mls-chat.ts: KeyPackages, a group, messages, and a raced commit rejected with the current epoch (twice: register, then log in)', async () => {
    for (const _ of [1, 2]) {
      const r = await run('examples/mls-chat.ts');
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^ {2}bob: Welcome received after acceptance → joined at epoch 1$/m);
      expect(r.stdout).toMatch(/^ {2}bob decrypts: "Hi Bob!"$/m);
      expect(r.stdout).toMatch(/^ {2}DS rejected (alice|bob)'s commit: wrong_epoch \(current epoch 2\)$/m);
      expect(r.stdout).not.toMatch(/carol has received [1-9]/);
      expect(r.stdout).toMatch(/^ {2}carol: Welcome received after acceptance → joined at epoch [23]$/m);
      expect(r.stdout.match(/^ {2}(alice|bob) decrypts: "Hello both, I am in!"$/gm)).toHaveLength(2);
    }
  }, 180_000);

  it('examples/franking-report.ts: a verified frank and report, then forged reports rejected', async () => {
    const r = await run('examples/franking-report.ts');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('bob: server signature verifies with published key v1: yes');
    expect(r.stdout).toMatch(/^bob reports the message → verdict: verified \(report #\d+\)$/m);
    expect(r.stdout).toMatch(/^moderator lists report #\d+: from @franking-alice:test\.local, "You will regret this/m);
    expect(r.stdout).toContain('bob (not a moderator) lists reports → 403 M_FORBIDDEN');
    expect(r.stdout).toContain('forged report (message changed) → verdict: rejected (franking_tag_mismatch)');
    expect(r.stdout).toContain('forged report (sender changed) → verdict: rejected (frank_mismatch)');
  }, 120_000);
});
