import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { overHttp, TestClient } from './support/client.ts';
import { ReorderingReceiver } from './support/reordering-receiver.ts';
import { freePort, ServerProcess } from './support/server-process.ts';

/**
 * Our server sending to receivers that apply a transaction's EDUs in any order, as Synapse does:
 * one device's messages must still arrive in order, also when they piled up during an outage.
 */
let a: ServerProcess;
const shuffler = new ReorderingReceiver();
const liar = new ReorderingReceiver(true);

beforeAll(async () => {
  await Promise.all([shuffler.start(), liar.start()]);
  a = await ServerProcess.create('a.test', await freePort(), {
    federation: {
      allow_http: true,
      static_routes: { 'shuffle.test': shuffler.baseUrl, 'liar.test': liar.baseUrl },
      backoff_initial_ms: 100,
      backoff_max_ms: 400,
    },
  });
  await a.start();
}, 120_000);

afterAll(async () => {
  await a?.destroy();
  await Promise.all([shuffler.stop(), liar.stop()]);
});

async function waitFor(check: () => boolean, what: string, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('federation to a receiver that reorders EDUs', () => {
  it('keeps one device\'s messages in order after an outage, carrying at most one per (sender, device) per transaction', async () => {
    const alice = await TestClient.register(overHttp(a.baseUrl), 'alice');
    const carol = await TestClient.register(overHttp(a.baseUrl), 'carol');
    await shuffler.stop();
    // 30 from alice and 10 from carol to one device, 10 from alice to another, while it is down.
    for (let i = 0; i < 30; i++) {
      const messages: Record<string, Record<string, unknown>> = { '@bob:shuffle.test': { D1: { i } } };
      if (i % 3 === 0) (messages['@bob:shuffle.test'] as Record<string, unknown>).D2 = { i };
      expect((await alice.sendToDevice('m.seq', messages)).status).toBe(200);
      if (i % 3 === 1) expect((await carol.sendToDevice('m.seq', { '@bob:shuffle.test': { D1: { c: i } } })).status).toBe(200);
    }
    await new Promise((r) => setTimeout(r, 300));
    await shuffler.start();
    await waitFor(() => (shuffler.stored.get('@bob:shuffle.test D1')?.length ?? 0) >= 40, 'D1 to get 40 messages');
    await waitFor(() => (shuffler.stored.get('@bob:shuffle.test D2')?.length ?? 0) >= 10, 'D2 to get 10 messages');

    const d1 = shuffler.stored.get('@bob:shuffle.test D1') ?? [];
    expect(d1.filter((m) => m.sender === alice.userId).map((m) => m.content.i)).toEqual(Array.from({ length: 30 }, (_, i) => i));
    expect(d1.filter((m) => m.sender === carol.userId).map((m) => m.content.c)).toEqual(Array.from({ length: 10 }, (_, i) => i * 3 + 1));
    expect((shuffler.stored.get('@bob:shuffle.test D2') ?? []).map((m) => m.content.i)).toEqual(Array.from({ length: 10 }, (_, i) => i * 3));
    // Two senders may share a transaction for D1 (only per-sender order is promised), and D2
    // rides along: 30 of alice's messages in 30 transactions, not one message per transaction.
    for (const counts of shuffler.transactions) expect(Math.max(...counts.values())).toBeLessThanOrEqual(2);
    expect(shuffler.transactions.length).toBeLessThanOrEqual(31);
    expect(shuffler.transactions.some((c) => c.size > 1)).toBe(true);
  }, 90_000);

  it('believes a receiver that says it applies EDUs in order: then one transaction carries many messages for a device', async () => {
    // The liar reorders anyway; what is shown is that the sender read its /version answer.
    const dave = await TestClient.register(overHttp(a.baseUrl), 'dave');
    await liar.stop();
    for (let i = 0; i < 20; i++) expect((await dave.sendToDevice('m.seq', { '@bob:liar.test': { D1: { i } } })).status).toBe(200);
    await liar.start();
    await waitFor(() => (liar.stored.get('@bob:liar.test D1')?.length ?? 0) >= 20, 'the liar to get 20 messages');
    // The first attempt may have found it down (and packed safely); the rest come together.
    expect(liar.transactions.length).toBeLessThanOrEqual(3);
    expect(Math.max(...liar.transactions.map((c) => c.get('@bob:liar.test D1') ?? 0))).toBeGreaterThanOrEqual(10);
  }, 90_000);
});
