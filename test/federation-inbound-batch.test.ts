import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GROUP_COMMIT_BATCH_SIZE } from '../src/metrics/counters.ts';
import { collectToDevice, TestClient } from './support/client.ts';
import { FakeServer } from './support/fake-server.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

// A federation transaction's to-device EDUs are applied in one statement (issue 18): in order,
// once each, all or nothing, and each device is woken once for the whole transaction.

const ORIGIN = 'batch.test';
let t: TestApp;
let fake: FakeServer;
let bob: TestClient;
let bobPhone: TestClient;
let txnCounter = 0;

beforeAll(async () => {
  fake = new FakeServer(ORIGIN);
  await fake.start();
  t = await startTestApp({ federation: { allow_http: true, static_routes: { [ORIGIN]: fake.baseUrl } } });
  bob = await TestClient.register(t.app, 'bob', { deviceId: 'LAPTOP' });
  bobPhone = await TestClient.login(t.app, 'bob', { deviceId: 'PHONE' });
});
afterAll(async () => {
  await t?.close();
  await fake?.stop();
});

type Edu = { edu_type: string; content: { sender: string; type: string; message_id: string; messages: Record<string, Record<string, unknown>> } };

function edu(messageId: string, sender: string, messages: Record<string, Record<string, unknown>>): Edu {
  return { edu_type: 'm.direct_to_device', content: { sender: `@${sender}:${ORIGIN}`, type: 'm.test', message_id: messageId, messages } };
}

async function sendTxn(edus: Edu[], txnId = `b${++txnCounter}`): Promise<number> {
  const uri = `/_matrix/federation/v1/send/${txnId}`;
  const body = { origin: ORIGIN, origin_server_ts: Date.now(), pdus: [], edus };
  const res = await t.app.request(uri, {
    method: 'PUT',
    headers: { 'content-type': 'application/json', authorization: fake.authorization('PUT', uri, SERVER_NAME, body) },
    body: JSON.stringify(body),
  });
  await res.arrayBuffer();
  return res.status;
}

/** The batch-size histogram's (count, sum) as /metrics shows them: statements run and sends they carried. */
async function batches(): Promise<{ count: number; sum: number }> {
  const text = await (await t.metricsApp.request('/metrics')).text();
  const value = (suffix: string) => Number(new RegExp(`^${GROUP_COMMIT_BATCH_SIZE}_${suffix} (\\S+)$`, 'm').exec(text)?.[1]);
  return { count: value('count'), sum: value('sum') };
}

async function drain(client: TestClient): Promise<void> {
  for (;;) {
    const s = await client.sync({ timeout: 0 });
    await client.sync({ since: s.next_batch, timeout: 0 });
    if (s.to_device.events.length === 0) return;
  }
}

const seqOf = (events: { sender: string; content: Record<string, unknown> }[], sender: string) =>
  events.filter((e) => e.sender === `@${sender}:${ORIGIN}`).map((e) => e.content.n as number);

describe('a federation transaction applied as one statement', () => {
  it('stores all of its EDUs in one group-commit statement, in order per sender and device', async () => {
    await drain(bob);
    await drain(bobPhone);
    const before = await batches();
    // 100 EDUs (the most a transaction may carry) from 4 senders taking turns, each to both devices.
    const edus = Array.from({ length: 100 }, (_, i) =>
      edu(`one-${i}`, `s${i % 4}`, { [bob.userId]: { LAPTOP: { n: Math.floor(i / 4) }, PHONE: { n: Math.floor(i / 4) } } }),
    );
    expect(await sendTxn(edus)).toBe(200);
    const after = await batches();
    expect(after.count - before.count).toBe(1);
    expect(after.sum - before.sum).toBe(100);
    for (const client of [bob, bobPhone]) {
      const got = await collectToDevice(client, 100);
      expect(got).toHaveLength(100);
      for (const s of ['s0', 's1', 's2', 's3']) expect(seqOf(got, s)).toEqual(Array.from({ length: 25 }, (_, i) => i));
    }
  });

  it('wakes a waiting long-poll once, with the whole transaction in its answer', async () => {
    await drain(bob);
    const first = await bob.sync({ timeout: 0 });
    const waiting = bob.sync({ since: first.next_batch, timeout: 10_000 });
    // Let the long-poll park before the transaction arrives.
    await new Promise((r) => setTimeout(r, 200));
    const before = t.services.counters.get('to_device_sync_wakeups_total');
    expect(await sendTxn(Array.from({ length: 40 }, (_, i) => edu(`wake-${i}`, 'w', { [bob.userId]: { LAPTOP: { n: i } } })))).toBe(200);
    const woken = await waiting;
    // Applied one EDU per commit, the first commit woke the poll with one message.
    expect(woken.to_device.events.map((e) => e.content.n)).toEqual(Array.from({ length: 40 }, (_, i) => i));
    expect(t.services.counters.get('to_device_sync_wakeups_total') - before).toBe(1);
    await bob.sync({ since: woken.next_batch, timeout: 0 });
    await drain(bobPhone);
  });

  it('applies each message_id once while transactions repeating each other arrive at once, with local sends to the same device', async () => {
    await drain(bob);
    // 30 transactions, each with 10 EDUs overlapping its neighbours' by 5, two of them sent twice
    // (a retry while the first attempt is still in the database), plus 50 local sends.
    const txns = Array.from({ length: 30 }, (_, k) => ({
      id: `overlap-${k}`,
      edus: Array.from({ length: 10 }, (_, j) => edu(`o-${k * 5 + j}`, 'o', { [bob.userId]: { LAPTOP: { n: k * 5 + j } } })),
    }));
    const alice = await TestClient.register(t.app, `alice${Date.now()}`);
    const statuses = await Promise.all([
      ...txns.map((x) => sendTxn(x.edus, x.id)),
      sendTxn(txns[3]!.edus, txns[3]!.id),
      sendTxn(txns[17]!.edus, txns[17]!.id),
      ...Array.from({ length: 50 }, (_, i) => alice.sendToDevice('m.local', { [bob.userId]: { LAPTOP: { i } } }).then((r) => r.status)),
    ]);
    expect(statuses.every((s) => s === 200)).toBe(true);
    const got = await collectToDevice(bob, 155 + 50);
    const remote = seqOf(got, 'o').sort((a, b) => a - b);
    expect(remote).toEqual(Array.from({ length: 155 }, (_, i) => i));
    expect(got.filter((e) => e.type === 'm.local').map((e) => e.content.i).sort((a, b) => (a as number) - (b as number))).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  it('keeps each sender\'s order across transactions sent one after another while local traffic competes', async () => {
    await drain(bob);
    const alice = await TestClient.register(t.app, `carol${Date.now()}`);
    let local = 0;
    let stop = false;
    const noise = (async () => {
      while (!stop) await Promise.all(Array.from({ length: 4 }, () => alice.sendToDevice('m.local', { [bob.userId]: { LAPTOP: { i: local++ } } })));
    })();
    let n = 0;
    for (let k = 0; k < 10; k++) {
      const edus = Array.from({ length: 20 }, (_, j) => edu(`seq-${k}-${j}`, `q${j % 2}`, { [bob.userId]: { LAPTOP: { n: n + Math.floor(j / 2) } } }));
      n += 10;
      expect(await sendTxn(edus)).toBe(200);
    }
    stop = true;
    await noise;
    const got = await collectToDevice(bob, 200 + local);
    for (const s of ['q0', 'q1']) expect(seqOf(got, s)).toEqual(Array.from({ length: 100 }, (_, i) => i));
  });

  it('fails the whole transaction when the database refuses one of its EDUs, storing nothing of it, and applies it all on the retry', async () => {
    await drain(bob);
    // A real refusal by the database, not a mock: a trigger that rejects one content.
    await t.database.db.execute(sql.raw(`
      create or replace function test_refuse_poison() returns trigger language plpgsql as $$
      begin
        if new.content like '%poison%' then raise exception 'refused by test trigger'; end if;
        return new;
      end $$`));
    await t.database.db.execute(sql.raw(`create trigger test_refuse_poison before insert on device_inbox for each row execute function test_refuse_poison()`));
    const edus = [
      edu('fail-0', 'f', { [bob.userId]: { LAPTOP: { n: 0 } } }),
      edu('fail-1', 'f', { [bob.userId]: { LAPTOP: { n: 1, poison: true } } }),
      edu('fail-2', 'f', { [bob.userId]: { PHONE: { n: 2 } } }),
    ];
    try {
      expect(await sendTxn(edus, 'poisoned')).toBe(500);
      expect((await bob.sync({ timeout: 0 })).to_device.events).toEqual([]);
      expect((await bobPhone.sync({ timeout: 0 })).to_device.events).toEqual([]);
      const claimed = await t.database.db.execute(sql.raw(`select count(*)::int as n from federation_inbound_messages where message_id like 'fail-%'`));
      expect((claimed as unknown as { rows?: { n: number }[] }).rows?.[0]?.n ?? (claimed as unknown as { n: number }[])[0]?.n).toBe(0);
    } finally {
      await t.database.db.execute(sql.raw(`drop trigger test_refuse_poison on device_inbox`));
      await t.database.db.execute(sql.raw(`drop function test_refuse_poison()`));
    }
    // The peer retries the same transaction: every EDU is applied, once.
    expect(await sendTxn(edus, 'poisoned')).toBe(200);
    expect(await sendTxn(edus, 'poisoned')).toBe(200);
    expect((await collectToDevice(bob, 2)).map((e) => e.content.n)).toEqual([0, 1]);
    expect((await collectToDevice(bobPhone, 1)).map((e) => e.content.n)).toEqual([2]);
  });
});
