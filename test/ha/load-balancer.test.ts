import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClient, type Requester, type SyncResponse } from '../support/client.ts';
import { haPorts } from '../support/ha/cluster.ts';
import { freePort, ServerProcess } from '../support/server-process.ts';

const run = promisify(execFile);
const HAPROXY_SH = fileURLToPath(new URL('../support/ha/haproxy.sh', import.meta.url));
const ADMIN_URL = process.env.TEST_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';

/** Why this cannot run here, or null: HAProxy installed and PostgreSQL answering at ADMIN_URL. */
async function skipReason(): Promise<string | null> {
  const onPath = (name: string) => (process.env.PATH ?? '').split(':').some((d) => existsSync(join(d, name))) || existsSync(join('/usr/sbin', name));
  if (!onPath('haproxy')) return 'not installed: haproxy (apt-get install haproxy)';
  const sql = postgres(ADMIN_URL, { max: 1, connect_timeout: 2, onnotice: () => {} });
  try {
    await sql`select 1`;
    return null;
  } catch (e) {
    return `no PostgreSQL at ${ADMIN_URL} (${(e as Error).message}); set TEST_DATABASE_URL`;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

const skip = await skipReason();
if (skip !== null) console.warn(`test/ha/load-balancer skipped: ${skip}`);

/**
 * Two real server processes (src/main.ts) on one PostgreSQL database behind HAProxy (round robin,
 * health check on /health/ready; test/support/ha/haproxy.sh), no stickiness. Clients talk only to
 * HAProxy, so a client's long-poll and its correspondents' sends land on different processes.
 * Which process answered is read from the `X-Request-Id` prefix (random per process).
 */
describe.skipIf(skip !== null)('two processes behind HAProxy', () => {
  const ports = haPorts();
  const hapDir = mkdtempSync(join(tmpdir(), 'tds-ha-hap-'));
  const hapEnv = {
    ...process.env,
    HAP_DIR: hapDir,
    HAP_PORT: String(ports.haproxy),
    HAP_BACKENDS: ports.http.map((p) => `127.0.0.1:${p}`).join(','),
    HAP_CHECK_MS: '500',
  };
  const processes: ServerProcess[] = [];
  /** X-Request-Id prefix → process index (0 or 1). */
  const prefixes = new Map<string, number>();
  /** Requests answered through HAProxy, per process. */
  const served = [0, 0];
  const processOf = (res: Response): number => {
    const id = res.headers.get('x-request-id') ?? '';
    const i = prefixes.get(id.slice(0, 8));
    if (i === undefined) throw new Error(`answer from an unknown process: X-Request-Id ${id}`);
    return i;
  };
  /** HAProxy's front, counting which process answered. */
  const balanced: Requester = {
    async request(path, init) {
      const res = await fetch(`http://127.0.0.1:${ports.haproxy}${path}`, init);
      served[processOf(res)]!++;
      return res;
    },
  };

  const metricsPorts = [0, 0];
  /** Long-polls parked in process `i`, from its own metrics listener. */
  const parkedIn = async (i: number): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${metricsPorts[i]}/metrics`)).text();
    return Number(/^to_device_sync_long_polls (\d+)$/m.exec(text)?.[1] ?? NaN);
  };

  beforeAll(async () => {
    metricsPorts[0] = await freePort();
    metricsPorts[1] = await freePort();
    const name = `tds_test_${randomBytes(6).toString('hex')}`;
    const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
    await admin.unsafe(`create database ${name}`);
    const url = new URL(ADMIN_URL);
    url.pathname = `/${name}`;
    const pg = {
      url: url.toString(),
      async drop() {
        await admin.unsafe(`drop database if exists ${name} with (force)`);
        await admin.end();
      },
    };
    const config = { rate_limits: { send_to_device: { per_second: 0 } }, metrics: { port: metricsPorts[0] } };
    const first = await ServerProcess.create('lb.test', ports.http[0], config, pg);
    processes.push(first, ServerProcess.sharing(first, ports.http[1], { metrics: { port: metricsPorts[1] } }));
    await Promise.all(processes.map((p) => p.start()));
    for (const [i, p] of processes.entries()) {
      const res = await fetch(`${p.baseUrl}/_matrix/client/versions`);
      prefixes.set((res.headers.get('x-request-id') ?? '').slice(0, 8), i);
      await res.body?.cancel();
    }
    expect(prefixes.size).toBe(2);
    await run(HAPROXY_SH, ['start'], { env: hapEnv, timeout: 30_000 });
    // Until HAProxy has answered from both.
    const seen = new Set<number>();
    for (let i = 0; i < 100 && seen.size < 2; i++) {
      const res = await fetch(`http://127.0.0.1:${ports.haproxy}/health/ready`).catch(() => null);
      if (res?.status === 200) seen.add(processOf(res));
      await res?.body?.cancel();
      if (seen.size < 2) await new Promise((r) => setTimeout(r, 100));
    }
    expect(seen.size).toBe(2);
  }, 90_000);

  afterAll(async () => {
    await run(HAPROXY_SH, ['stop'], { env: hapEnv, timeout: 30_000 }).catch(() => undefined);
    // The second shares the first's database; the first drops it.
    for (const p of [...processes].reverse()) await p.destroy();
    rmSync(hapDir, { recursive: true, force: true });
  }, 60_000);

  async function syncAt(client: TestClient, since: string | null, timeout: number): Promise<{ process: number; body: SyncResponse }> {
    const q = new URLSearchParams({ timeout: String(timeout) });
    if (since !== null) q.set('since', since);
    const res = await client.request('GET', `/v3/sync?${q}`);
    const body = (await res.json()) as SyncResponse;
    if (res.status !== 200) throw new Error(`sync: ${res.status} ${JSON.stringify(body)}`);
    return { process: processOf(res), body };
  }

  it('a long-poll on one process is woken within a second by a send through the other', async () => {
    const alice = await TestClient.register(balanced, 'lb_alice');
    const bob = await TestClient.register(balanced, 'lb_bob');
    let since = (await syncAt(bob, null, 0)).body.next_batch;
    const latencies: number[] = [];
    let crossed = 0;
    for (let n = 0; n < 12; n++) {
      const polling = syncAt(bob, since, 20_000);
      await new Promise((r) => setTimeout(r, 150));
      const sentAt = performance.now();
      const res = await alice.request('PUT', `/v3/sendToDevice/m.lb/wake-${n}`, { messages: { [bob.userId]: { [bob.deviceId]: { n } } } });
      expect(res.status).toBe(200);
      const sentBy = processOf(res);
      await res.body?.cancel();
      const woken = await polling;
      const ms = performance.now() - sentAt;
      expect(woken.body.to_device.events.map((e) => e.content)).toEqual([{ n }]);
      since = woken.body.next_batch;
      if (woken.process !== sentBy) {
        crossed++;
        latencies.push(ms);
      }
    }
    latencies.sort((a, b) => a - b);
    const p50 = latencies[Math.floor(latencies.length / 2)] ?? NaN;
    const max = latencies.at(-1) ?? NaN;
    console.warn(`load balancer: ${crossed}/12 long-polls woken by a send through the other process; wake latency (send start → poll answered) median ${p50.toFixed(1)} ms, max ${max.toFixed(1)} ms`);
    // Round robin alternates: the poll and the send that follows it go to different processes.
    expect(crossed).toBeGreaterThanOrEqual(6);
    expect(max).toBeLessThan(1_000);
  }, 30_000);

  it('clients spread over both processes: every message delivered exactly once, retries with the same txnId stored once', async () => {
    const before = [...served];
    const senders = await Promise.all([0, 1, 2, 3].map((i) => TestClient.register(balanced, `lb_sender${i}`)));
    const recipients = await Promise.all([0, 1, 2].map((i) => TestClient.register(balanced, `lb_rcpt${i}`)));
    const PER_SENDER = 40;
    const expected = senders.length * PER_SENDER;
    // Each recipient long-polls through HAProxy until it has every message meant for it.
    const received = recipients.map(() => [] as string[]);
    let done = false;
    const polls = recipients.map(async (r, i) => {
      let since = (await syncAt(r, null, 0)).body.next_batch;
      const deadline = Date.now() + 20_000;
      while (!done && Date.now() < deadline) {
        const s = await syncAt(r, since, 1_000);
        received[i]!.push(...s.body.to_device.events.map((e) => (e.content as { id: string }).id));
        since = s.body.next_batch;
      }
      // Whatever is left after the senders finished, then nothing more.
      for (;;) {
        const s = await syncAt(r, since, 0);
        if (s.body.to_device.events.length === 0) break;
        received[i]!.push(...s.body.to_device.events.map((e) => (e.content as { id: string }).id));
        since = s.body.next_batch;
      }
    });
    let retried = 0;
    await Promise.all(
      senders.map(async (sender, s) => {
        for (let k = 0; k < PER_SENDER; k++) {
          const to = recipients[k % recipients.length]!;
          const id = `${s}-${k}`;
          const put = () => sender.request('PUT', `/v3/sendToDevice/m.lb/spread-${id}`, { messages: { [to.userId]: { [to.deviceId]: { id } } } });
          const res = await put();
          expect(res.status).toBe(200);
          await res.body?.cancel();
          // Every fourth is sent again with the same txnId, as a client whose answer was lost would;
          // round robin puts the retry on the other process.
          if (k % 4 === 0) {
            const again = await put();
            expect(again.status).toBe(200);
            await again.body?.cancel();
            retried++;
          }
        }
      }),
    );
    // Every message reached its recipient, then the polls stop.
    const deadline = Date.now() + 15_000;
    while (received.flat().length < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    done = true;
    await Promise.all(polls);

    const all = received.flat();
    const duplicates = all.length - new Set(all).size;
    const missing = senders.flatMap((_, s) => Array.from({ length: PER_SENDER }, (_, k) => `${s}-${k}`)).filter((id) => !all.includes(id));
    const spread = served.map((n, i) => n - before[i]!);
    console.warn(`load balancer: ${expected} messages (${retried} sent twice with the same txnId) from 4 senders to 3 long-polling recipients; received ${all.length}, missing ${missing.length}, duplicated ${duplicates}; requests answered per process ${JSON.stringify(spread)}`);
    expect(missing).toEqual([]);
    expect(duplicates).toBe(0);
    expect(all.length).toBe(expected);
    // Both processes did a fair share.
    expect(Math.min(...spread)).toBeGreaterThan(Math.max(...spread) / 3);
  }, 30_000);

  it('a process killed: HAProxy sends everything to the other without a failed answer, long-polls it held included, and takes it back once restarted', async () => {
    const alice = await TestClient.register(balanced, 'lb_kill_alice');
    const bob = await TestClient.register(balanced, 'lb_kill_bob');
    let since = (await syncAt(bob, null, 0)).body.next_batch;
    // Long-polls parked through HAProxy until the one to be killed holds some (round robin
    // alternates, so it takes two or three).
    const pollers: { client: TestClient; poll: Promise<{ process: number; body: SyncResponse }> }[] = [];
    while (pollers.length < 6 && (pollers.length < 2 || (await parkedIn(1)) === 0)) {
      const client = await TestClient.register(balanced, `lb_kill_poller${pollers.length}`);
      const from = (await syncAt(client, null, 0)).body.next_batch;
      const poll = syncAt(client, from, 25_000);
      poll.catch(() => {}); // awaited below; this only keeps an early failure from going unhandled first
      pollers.push({ client, poll });
      const deadline = Date.now() + 5_000;
      while ((await parkedIn(0)) + (await parkedIn(1)) < pollers.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    }
    const heldByKilled = await parkedIn(1);
    expect(heldByKilled).toBeGreaterThan(0);
    await processes[1]!.stop('SIGKILL');
    const statuses: number[] = [];
    const by = new Set<number>();
    for (let n = 0; n < 20; n++) {
      const res = await alice.request('PUT', `/v3/sendToDevice/m.lb/kill-${n}`, { messages: { [bob.userId]: { [bob.deviceId]: { n } } } });
      statuses.push(res.status);
      by.add(processOf(res));
      await res.body?.cancel();
    }
    // Connection refused is retried on the other server (`retries`, `option redispatch`).
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    expect([...by]).toEqual([0]);
    const s = await syncAt(bob, since, 0);
    expect(s.body.to_device.events.map((e) => (e.content as { n: number }).n)).toEqual(Array.from({ length: 20 }, (_, n) => n));
    since = s.body.next_batch;
    // The polls the killed process held were sent again to the survivor (`retry-on
    // empty-response`): each is answered there, with the message sent to it after the kill.
    for (const [i, p] of pollers.entries()) {
      const sent = await alice.sendToDevice('m.lb', { [p.client.userId]: { [p.client.deviceId]: { poller: i } } }, `kill-poller-${i}`);
      expect(sent.status).toBe(200);
    }
    const answers = await Promise.all(pollers.map((p) => p.poll));
    expect(answers.map((a) => a.body.to_device.events.map((e) => e.content))).toEqual(pollers.map((_, i) => [{ poller: i }]));
    expect(answers.filter((a) => a.process === 1)).toEqual([]);
    console.warn(`load balancer: ${pollers.length} long-polls parked through HAProxy, ${heldByKilled} of them on the process killed; all answered by the survivor with their message`);

    // Restarted (a new X-Request-Id prefix): the health check brings it back into rotation.
    const restartedAt = Date.now();
    await processes[1]!.start();
    const res = await fetch(`${processes[1]!.baseUrl}/_matrix/client/versions`);
    prefixes.set((res.headers.get('x-request-id') ?? '').slice(0, 8), 1);
    await res.body?.cancel();
    let back = 0;
    for (let i = 0; i < 100 && back === 0; i++) {
      const r = await fetch(`http://127.0.0.1:${ports.haproxy}/health/ready`);
      if (r.status === 200 && processOf(r) === 1) back = Date.now();
      await r.body?.cancel();
      if (back === 0) await new Promise((r) => setTimeout(r, 100));
    }
    console.warn(`load balancer: a killed process back in rotation ${back - restartedAt} ms after its restart began; 20 sends while it was down: all 200`);
    expect(back).toBeGreaterThan(0);
    // And a long-poll on one woken by a send through the other again.
    const polling = syncAt(bob, since, 20_000);
    await new Promise((r) => setTimeout(r, 150));
    const sent = await alice.sendToDevice('m.lb', { [bob.userId]: { [bob.deviceId]: { n: 20 } } }, 'kill-20');
    expect(sent.status).toBe(200);
    expect((await polling).body.to_device.events.map((e) => e.content)).toEqual([{ n: 20 }]);
  }, 30_000);
});
