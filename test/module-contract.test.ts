import * as v from 'valibot';
import { afterEach, describe, expect, it } from 'vitest';
import { defineHandler, ModuleError, SDK_VERSION, type HandlerModule } from '../src/sdk/index.ts';
import { checkModules, HandlerLoadError } from '../src/server-user/module-checks.ts';
import type { Database } from '../src/storage/drivers/database.ts';
import { openPgliteInMemory } from './support/test-database.ts';
import { testModule, type ModuleTester } from '../src/testing/index.ts';
import { TestClient } from './support/client.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

const kits: ModuleTester[] = [];
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const kit of kits.splice(0)) await kit.close();
  for (const close of closers.splice(0)) await close();
});

const noEvents = { 'org.example.nothing': { schema: v.object({}), handle() {} } };

function codesOf(e: unknown): string[] {
  expect(e).toBeInstanceOf(HandlerLoadError);
  return (e as HandlerLoadError).problems.map((p) => p.code);
}

describe('the SDK version a module declares', () => {
  const needs = (sdk: string) => defineHandler({ name: 'versioned', sdk, events: noEvents });

  it('is refused at load with TDS_ERR_SDK_VERSION when it does not include this SDK, by the kit and by the server alike', async () => {
    const major = Number(SDK_VERSION.split('.')[0]);
    const future = needs(`^${major + 1}.0.0`);
    const kitError = await testModule(future).catch((e: unknown) => e);
    expect(codesOf(kitError)).toEqual(['TDS_ERR_SDK_VERSION']);
    expect((kitError as Error).message).toContain(`handler module "versioned" needs SDK ^${major + 1}.0.0; this server's SDK is ${SDK_VERSION}`);
    const serverError = await startTestApp({}, [{ module: future }]).catch((e: unknown) => e);
    expect(codesOf(serverError)).toEqual(['TDS_ERR_SDK_VERSION']);
    expect(codesOf(await testModule(needs('not a range')).catch((e: unknown) => e))).toEqual(['TDS_ERR_SDK_VERSION']);
  });

  it('loads when it does', async () => {
    kits.push(await testModule(needs(`^${SDK_VERSION}`)));
    kits.push(await testModule(needs(`>=1.0.0 <${Number(SDK_VERSION.split('.')[0]) + 1}`)));
  });

  it('is checked before any database work, with the config', async () => {
    const started = performance.now();
    const error = await testModule(defineHandler({ name: 'configured', sdk: '^99.0.0', config: v.strictObject({ a: v.number() }), events: noEvents }), { config: { b: 1 } }).catch((e: unknown) => e);
    expect(codesOf(error).sort()).toEqual(['TDS_ERR_CONFIG_INVALID', 'TDS_ERR_CONFIG_UNKNOWN_KEY', 'TDS_ERR_SDK_VERSION']);
    // No PGlite was opened: that alone takes longer than this.
    expect(performance.now() - started).toBeLessThan(150);
  });
});

describe('a module\'s config', () => {
  it('is parsed once from start-up\'s check to the server that start-up hands the modules to', async () => {
    let parses = 0;
    const counted = defineHandler({
      name: 'counted',
      sdk: `^${SDK_VERSION}`,
      config: v.pipe(
        v.object({ a: v.number() }),
        v.transform((c) => {
          parses++;
          return c;
        }),
      ),
      events: noEvents,
    });
    const handlers = [{ module: counted, config: { a: 1 } }];
    // What prepareStartup does with the imported modules, before any database is opened…
    expect(checkModules(handlers).problems).toEqual([]);
    // …and the server built from the same list.
    const t = await startTestApp({}, handlers);
    closers.push(() => t.close());
    expect(parses).toBe(1);
  });
});

describe('setup and stop deadlines', () => {
  it('fails the start with TDS_ERR_SETUP_TIMEOUT when setup overruns, aborting its signal, and stops it if it finishes later', async () => {
    let aborted: unknown = null;
    let stoppedLate = false;
    let finish: () => void = () => {};
    const slow = defineHandler({
      name: 'slow',
      async setup(ctx) {
        ctx.signal.addEventListener('abort', () => (aborted = ctx.signal.reason));
        await new Promise<void>((resolve) => (finish = resolve));
        return { state: undefined, stop: () => void (stoppedLate = true) };
      },
      events: noEvents,
    });
    const error = await testModule(slow, { setupDeadlineMs: 50 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModuleError);
    expect((error as ModuleError).code).toBe('TDS_ERR_SETUP_TIMEOUT');
    expect((error as Error).message).toBe('handler module "slow" setup did not finish within 50 ms (server_user.setup_deadline_ms)');
    expect((aborted as DOMException).name).toBe('TimeoutError');
    finish();
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(stoppedLate).toBe(true);
  });

  it('runs stop only after the in-flight handlers finished, even past the dispatch deadline', async () => {
    const order: string[] = [];
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const busy = defineHandler({
      name: 'busy',
      setup: () => ({ state: undefined, stop: () => void order.push('stop') }),
      events: {
        'org.example.work': {
          schema: v.object({}),
          async handle() {
            await gate;
            order.push('handler finished');
          },
        },
      },
    });
    const kit = await testModule(busy, { deadlineMs: 20 });
    expect((await kit.deliver('org.example.work', {})).outcome).toBe('timeout');
    const closing = kit.close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(order).toEqual([]);
    // A message arriving once the module is stopping is not handed to it.
    expect((await kit.deliver('org.example.work', {})).outcome).toBe('error');
    release();
    await closing;
    expect(order).toEqual(['handler finished', 'stop']);
  });

  it('aborts in-flight handlers at the stop deadline, then stops, and logs both overruns', async () => {
    const lines: { msg: string; code?: string }[] = [];
    const log = {
      debug: () => {},
      info: () => {},
      warn: (msg: string, fields?: Record<string, unknown>) => lines.push({ msg, ...(fields as object) }),
      error: (msg: string, fields?: Record<string, unknown>) => lines.push({ msg, ...(fields as object) }),
      child: () => log,
    };
    const order: string[] = [];
    const stuck = defineHandler({
      name: 'stuck',
      setup: () => ({ state: undefined, stop: () => new Promise<void>(() => void order.push('stop called')) }),
      events: {
        'org.example.hang': {
          schema: v.object({}),
          handle: (_event, ctx) =>
            new Promise<void>((resolve) =>
              ctx.signal.addEventListener('abort', () => {
                order.push(`aborted: ${(ctx.signal.reason as Error).name}`);
                resolve();
              }),
            ),
        },
      },
    });
    const kit = await testModule(stuck, { deadlineMs: 5000, stopDeadlineMs: 60, log });
    const delivery = kit.deliver('org.example.hang', {});
    await new Promise((resolve) => setTimeout(resolve, 10));
    await kit.close();
    expect(order).toEqual(['aborted: AbortError', 'stop called']);
    expect((await delivery).outcome).toBe('handled');
    expect(lines.filter((l) => l.code === 'TDS_ERR_STOP_TIMEOUT').map((l) => l.msg)).toEqual([
      'in-flight handlers did not finish before the stop deadline; aborted',
      'stop did not finish before the stop deadline; shutdown goes on',
    ]);
  });
});

describe('ctx.clock and ctx.periodic', () => {
  function ticker(runs: string[]): HandlerModule<{ label: string }, undefined> {
    return defineHandler({
      name: 'ticker',
      config: v.strictObject({ label: v.string() }),
      setup(ctx) {
        ctx.periodic({ name: 'cleanup', everyMs: 1000, scope: 'deployment', run: () => void runs.push(`${ctx.config.label} cleanup @${ctx.clock.now() - start}`) });
        ctx.periodic({ name: 'cache', everyMs: 1000, run: () => void runs.push(`${ctx.config.label} cache`) });
        ctx.clock.setTimeout(() => runs.push(`${ctx.config.label} one-off`), 60_000);
      },
      events: noEvents,
    });
  }
  const start = Date.UTC(2027, 0, 1);

  it('runs a deployment task on exactly one of two processes, and on the other once the first stops', async () => {
    const database: Database = await openPgliteInMemory();
    closers.push(() => database.close());
    const runs: string[] = [];
    const module = ticker(runs);
    const { TestClock } = await import('../src/testing/index.ts');
    const a = await testModule(module, { config: { label: 'A' }, database, clock: new TestClock(start) });
    const b = await testModule(module, { config: { label: 'B' }, database, clock: new TestClock(start) });
    for (let i = 0; i < 3; i++) {
      await a.clock.advance(1000);
      await b.clock.advance(1000);
    }
    expect(runs.filter((r) => r.includes('cleanup'))).toEqual(['A cleanup @1000', 'A cleanup @2000', 'A cleanup @3000']);
    expect(runs.filter((r) => r.includes('cache'))).toEqual(['A cache', 'B cache', 'A cache', 'B cache', 'A cache', 'B cache']);
    runs.splice(0);
    await a.close();
    expect(a.clock.pending).toBe(0); // its tasks and its one-off timer are gone with it
    await b.clock.advance(1000);
    expect(runs).toEqual(['B cleanup @4000', 'B cache']);
    await b.clock.advance(60_000);
    expect(runs).toContain('B one-off');
    await b.close();
  });

  it('refuses a periodic task declared twice or with a bad interval (TDS_ERR_PERIODIC_TASK)', async () => {
    const twice = defineHandler({
      name: 'twice',
      setup(ctx) {
        ctx.periodic({ name: 't', everyMs: 10, run() {} });
        ctx.periodic({ name: 't', everyMs: 10, run() {} });
      },
      events: noEvents,
    });
    const error = await testModule(twice).catch((e: unknown) => e);
    expect((error as ModuleError).code).toBe('TDS_ERR_PERIODIC_TASK');
    expect((error as Error).message).toBe('handler module "twice" periodic task "t" is declared twice');
  });
});

describe('what a module sends, checked alike by the test kit and the server', () => {
  const attempts: Record<string, [string, Record<string, unknown>, { userId: string; deviceId: string }]> = {
    'to the server user': ['org.example.x', {}, { userId: '@:test.local', deviceId: '' }],
    'an invalid user ID': ['org.example.x', {}, { userId: 'bob', deviceId: 'D' }],
    'an empty device ID': ['org.example.x', {}, { userId: '@bob:test.local', deviceId: '' }],
    'a device ID with NUL': ['org.example.x', {}, { userId: '@bob:test.local', deviceId: 'D\u0000' }],
    'an empty event type': ['', {}, { userId: '@bob:test.local', deviceId: 'D' }],
    'content that is not canonical JSON': ['org.example.x', { n: 1.5 }, { userId: '@bob:test.local', deviceId: 'D' }],
    'content over 65536 bytes': ['org.example.x', { big: 'x'.repeat(70_000) }, { userId: '@bob:test.local', deviceId: 'D' }],
    'content with a lone surrogate': ['org.example.x', { s: '\ud800' }, { userId: '@bob:test.local', deviceId: 'D' }],
  };
  // Tries every refused send, then one good one, and reports what each threw.
  const prober = defineHandler({
    name: 'prober',
    events: {
      'org.example.probe': {
        schema: v.object({}),
        async handle(_event, ctx) {
          const results: Record<string, string> = {};
          for (const [what, [type, content, to]] of Object.entries(attempts)) {
            results[what] = await ctx.send(type, content, to).then(
              () => 'sent',
              (e: unknown) => (e instanceof ModuleError ? e.code : `other: ${String(e)}`),
            );
          }
          await ctx.reply('org.example.probed', results);
        },
      },
    },
  });
  const allRefused = Object.fromEntries(Object.keys(attempts).map((k) => [k, 'TDS_ERR_SEND_INVALID']));

  it('in the test kit', async () => {
    const kit = await testModule(prober);
    kits.push(kit);
    const { outcome, sent } = await kit.deliver('org.example.probe', {});
    expect(outcome).toBe('handled');
    expect(sent).toEqual([{ userId: '@alice:test.local', deviceId: 'ALICEDEVICE', type: 'org.example.probed', content: allRefused }]);
  });

  it('in the server', async () => {
    const t: TestApp = await startTestApp({}, [{ module: prober }]);
    closers.push(() => t.close());
    const alice = await TestClient.register(t.app, 'alice');
    expect((await alice.sendToDevice('org.example.probe', { '@:test.local': { '': {} } })).status).toBe(200);
    const sync = await alice.sync();
    expect(sync.to_device?.events).toEqual([{ sender: '@:test.local', type: 'org.example.probed', content: allRefused }]);
  });
});
