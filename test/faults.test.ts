import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectToDevice, overHttp, TestClient } from './support/client.ts';
import { freePort, ServerProcess } from './support/server-process.ts';
import { usingPostgres } from './support/test-database.ts';

/**
 * Faults against a real server process and its real database (PGlite directory, or
 * PostgreSQL with TEST_DATABASE_URL): crashes, lost database connections, graceful shutdown.
 */
let server: ServerProcess;
const api = () => overHttp(server.baseUrl);

beforeAll(async () => {
  server = await ServerProcess.create('faults.test', await freePort());
  await server.start();
}, 60_000);
afterAll(() => server?.destroy());

/** `senders` clients send numbered messages to `target` until `stop()`; returns what got a 200. */
function load(senders: TestClient[], target: TestClient, tag: string) {
  const acked: string[] = [];
  const failures: { status: number; errcode: unknown }[] = [];
  let running = true;
  const loops = senders.map(async (sender, i) => {
    for (let n = 0; running; n++) {
      const id = `${tag}-${i}-${n}`;
      try {
        const res = await Promise.race([
          sender.sendToDevice('m.load', { [target.userId]: { [target.deviceId]: { id } } }, id),
          new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`request ${id} hung`)), 15_000)),
        ]);
        if (res.status === 200) acked.push(id);
        else failures.push({ status: res.status, errcode: res.body.errcode });
      } catch (e) {
        if (String(e).includes('hung')) throw e;
        // Connection refused/reset while the server is down: not acknowledged, may be retried.
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  });
  return {
    acked,
    failures,
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

function idsOf(events: { content: Record<string, unknown> }[]): string[] {
  return events.map((e) => String(e.content.id));
}

describe('faults', () => {
  it('loses no acknowledged message when SIGKILLed under load from 32 clients', async () => {
    const target = await TestClient.register(api(), 'crash_target');
    const senders = await Promise.all(Array.from({ length: 32 }, (_, i) => TestClient.register(api(), `crash_sender${i}`)));
    const run = load(senders, target, 'kill');
    await new Promise((r) => setTimeout(r, 1_500));
    await server.stop('SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    await server.start();
    await new Promise((r) => setTimeout(r, 1_000));
    await run.stop();
    expect(run.acked.length).toBeGreaterThan(50);

    const received = idsOf(await collectToDevice(target, run.acked.length, 30_000));
    const counts = new Map<string, number>();
    for (const id of received) counts.set(id, (counts.get(id) ?? 0) + 1);
    expect([...counts].filter(([, n]) => n > 1)).toEqual([]);
    const missing = run.acked.filter((id) => !counts.has(id));
    expect(missing).toEqual([]);

    // Acknowledged by the device: never delivered again, even across a restart.
    await server.stop('SIGKILL');
    await server.start();
    expect((await target.sync()).to_device.events).toEqual([]);
  }, 120_000);

  it('answers SIGTERM gracefully: in-flight requests finish, long-polls answer, exit 0', async () => {
    const a = await TestClient.register(api(), 'term_a');
    const b = await TestClient.register(api(), 'term_b');
    const initial = await b.sync();
    const polling = b.sync({ since: initial.next_batch, timeout: 60_000 });
    await new Promise((r) => setTimeout(r, 100));
    const started = Date.now();
    const { exited } = server.signal('SIGTERM');
    const s = await polling;
    expect(s.next_batch).toEqual(expect.any(String));
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(await exited).toBe(0);
    await expect(a.request('GET', '/v3/account/whoami')).rejects.toThrow();
    await server.start();
  }, 60_000);

  it.skipIf(!usingPostgres())('survives PostgreSQL connections being killed under load: 5xx M_UNKNOWN meanwhile, nothing acknowledged lost', async () => {
    const target = await TestClient.register(api(), 'pg_target');
    const senders = await Promise.all(Array.from({ length: 8 }, (_, i) => TestClient.register(api(), `pg_sender${i}`)));
    const admin = postgres(server.databaseUrl as string, { max: 1, onnotice: () => {} });
    try {
      const run = load(senders, target, 'pgkill');
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 400));
        await admin`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()`;
      }
      await new Promise((r) => setTimeout(r, 1_000));
      await run.stop();
      for (const f of run.failures) {
        expect(f.status).toBeGreaterThanOrEqual(500);
        expect(f.errcode).toBe('M_UNKNOWN');
      }
      // It recovered by itself: within 10 s a send is stored again (a connection killed last may
      // still fail the first request after it, on a loaded machine; CI saw that once).
      let after = 0;
      for (const until = Date.now() + 10_000; after !== 200 && Date.now() < until; ) {
        after = (await senders[0]?.sendToDevice('m.after', { [target.userId]: { [target.deviceId]: { id: 'after' } } }, 'after-txn'))?.status ?? 0;
        if (after !== 200) await new Promise((r) => setTimeout(r, 200));
      }
      expect(after).toBe(200);
      const received = idsOf(await collectToDevice(target, run.acked.length + 1, 30_000));
      expect(run.acked.filter((id) => !received.includes(id))).toEqual([]);
      expect(new Set(received).size).toBe(received.length);
    } catch (e) {
      // A server that died here says why on its stderr, which nothing else shows.
      throw new Error(`${e instanceof Error ? e.message : String(e)}\nserver stderr (last 4,000 characters):\n${server.stderr.slice(-4000)}`, { cause: e });
    } finally {
      await admin.end();
    }
  }, 120_000);
});
