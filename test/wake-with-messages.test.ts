import { and, desc, eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Counters } from '../src/metrics/counters.ts';
import { Notifier } from '../src/runtime/notifier.ts';
import { ToDeviceSyncService, type ToDeviceBatch } from '../src/services/sync.ts';
import { ToDeviceService } from '../src/services/to-device.ts';
import type { Database } from '../src/storage/drivers/database.ts';
import { DeviceInboxStore } from '../src/storage/device-inbox-store.ts';
import { SendStatement, type EnqueueResult } from '../src/storage/send-statement.ts';
import { NewMessages } from '../src/storage/new-messages.ts';
import { queryRows } from '../src/shared/query-rows.ts';
import { deviceInbox, devices } from '../src/storage/schema.ts';
import { createTestDatabase, usingPostgres } from './support/test-database.ts';

/**
 * A long-poll woken by an enqueue in its own process may answer from the messages that enqueue
 * stored, without reading the queue again — but only when nothing else reached the device since
 * the poll's own read. These tests are about that "only": a message committed elsewhere in
 * between must still be delivered, never skipped and then acknowledged unseen.
 */
let database: Database;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await database?.close();
});

let seq = 0;
async function newDevice(): Promise<{ userId: string; deviceId: string }> {
  const d = { userId: `@u${++seq}:test`, deviceId: 'PHONE' };
  await database.db.insert(devices).values({ ...d, createdTs: Date.now() });
  return d;
}

/** The device's newest queued message, 0 when it has none. */
async function newestQueued(d: { userId: string; deviceId: string }): Promise<number> {
  const rows = await database.db
    .select({ id: deviceInbox.streamId })
    .from(deviceInbox)
    .where(and(eq(deviceInbox.userId, d.userId), eq(deviceInbox.deviceId, d.deviceId)))
    .orderBy(desc(deviceInbox.streamId))
    .limit(1);
  return rows[0]?.id ?? 0;
}

/** One server process's view: its own notifier (no NOTIFY between them, as if it were lost or late). */
function process_(notifier = new Notifier()) {
  return {
    notifier,
    sync: new ToDeviceSyncService(database.db, notifier),
    toDevice: new ToDeviceService({ db: database.db, serverName: 'test', notifier, counters: new Counters() }),
  };
}

/**
 * The poll has subscribed and, given a moment, made its first read: what is sent next comes after
 * that read (a poll whose read saw it would answer at once, and prove nothing).
 */
async function parked(notifier: Notifier, n = 1): Promise<void> {
  for (let i = 0; i < 200 && notifier.waiting < n; i++) await new Promise((r) => setTimeout(r, 5));
  expect(notifier.waiting).toBe(n);
  await new Promise((r) => setTimeout(r, 50));
}

const contents = (batch: ToDeviceBatch) => batch.events.map((e) => JSON.parse(e.contentJson) as unknown);
const send = (p: ReturnType<typeof process_>, to: { userId: string; deviceId: string }, n: number) =>
  p.toDevice.send({ sender: '@a:test', senderDevice: 'A', type: 'm.test', origin: 'client', messages: { [to.userId]: { [to.deviceId]: { n } } } });

describe('a long-poll woken with the messages that woke it', () => {
  it('delivers a message another process committed after its read, before the one that woke it', async () => {
    const d = await newDevice();
    const here = process_();
    const elsewhere = process_();
    const poll = here.sync.sync({ ...d, since: null, limit: 100, timeoutMs: 60_000 }, (b) => b);
    await parked(here.notifier);
    await send(elsewhere, d, 1); // its wake-up never reaches `here`
    await send(here, d, 2);
    const batch = await poll;
    expect(contents(batch)).toEqual([{ n: 1 }, { n: 2 }]);
  });

  it('answers with everything one enqueue stored for the device, in order, and its position', async () => {
    const d = await newDevice();
    const here = process_();
    const poll = here.sync.sync({ ...d, since: null, limit: 100, timeoutMs: 60_000 }, (b) => b);
    await parked(here.notifier);
    await here.toDevice.send({
      sender: '@a:test',
      senderDevice: 'A',
      type: 'm.test',
      origin: 'client',
      messages: { [d.userId]: { '*': { n: 1 } } },
    });
    const batch = await poll;
    expect(contents(batch)).toEqual([{ n: 1 }]);
    expect(batch.nextPosition).toBe(await newestQueued(d));
    // The position acknowledges exactly that: nothing is pending after it, nothing before it is redelivered.
    const next = await here.sync.sync({ ...d, since: batch.nextPosition, limit: 100, timeoutMs: 0 }, (b) => b);
    expect(next.events).toEqual([]);
  });

  it('answers from the news when nothing older is past its position, and reads when something is', async () => {
    const d = await newDevice();
    await send(process_(), d, 1);
    const before = await newestQueued(d);
    const notifier = new Notifier();
    const sync = new ToDeviceSyncService(database.db, notifier);
    const invented = { streamId: before + 1_000_000, sender: '@:test', type: 'm.invented', content: '{"invented":true}' };

    // Its read sees message 1 at once: to wait, it starts after it.
    const trusting = sync.sync({ ...d, since: before, limit: 100, timeoutMs: 60_000 }, (b) => b);
    await parked(notifier);
    notifier.notify(d.userId, d.deviceId, new NewMessages(before, [invented]));
    expect(contents(await trusting)).toEqual([{ invented: true }]);

    // News that follows a message past the poll's position is not all it is owed: it reads.
    const doubting = sync.sync({ ...d, since: before, limit: 100, timeoutMs: 60_000 }, (b) => b);
    await parked(notifier);
    notifier.notify(d.userId, d.deviceId, new NewMessages(before + 1, [invented]));
    expect((await doubting).events).toEqual([]);
  });

  it('keeps to its limit when the news holds more', async () => {
    const d = await newDevice();
    const here = process_();
    const poll = here.sync.sync({ ...d, since: null, limit: 2, timeoutMs: 60_000 }, (b) => b);
    await parked(here.notifier);
    const inbox = new SendStatement(database.db);
    const [result] = await inbox.run([
      { txn: null, sender: '@a:test', type: 'm.test', targets: [{ ...d, content: '{}' }], watch: [d] },
      { txn: null, sender: '@a:test', type: 'm.test', targets: [{ ...d, content: '{"n":2}' }] },
      { txn: null, sender: '@a:test', type: 'm.test', targets: [{ ...d, content: '{"n":3}' }] },
    ]);
    const news = (result as EnqueueResult).stored[0]?.news;
    expect(news?.messages.map((m) => m.content)).toEqual(['{}', '{"n":2}', '{"n":3}']);
    // Read before the insert: a fresh device had nothing queued.
    expect(news?.previousId).toBe(0);
    here.notifier.notify(d.userId, d.deviceId, news);
    const batch = await poll;
    expect(contents(batch)).toEqual([{}, { n: 2 }]);
    const rest = await here.sync.sync({ ...d, since: batch.nextPosition, limit: 100, timeoutMs: 0 }, (b) => b);
    expect(contents(rest)).toEqual([{ n: 3 }]);
  });
});

describe('which devices an enqueue reports new messages for', () => {
  it('only the watched ones (with a long-poll waiting here), so a fan-out to many costs no lookups', async () => {
    const d = await newDevice();
    const other = { userId: d.userId, deviceId: 'LAPTOP' };
    await database.db.insert(devices).values({ ...other, createdTs: Date.now() });
    const inbox = new SendStatement(database.db);
    const [fanOut] = await inbox.run([
      { txn: null, sender: '@a:test', type: 'm.test', targets: [{ userId: d.userId, deviceId: '*', content: '{}' }], watch: [other] },
    ]);
    const stored = new Map(fanOut?.stored.map((s) => [s.deviceId, s.news]));
    expect([...stored.keys()].sort()).toEqual(['LAPTOP', 'PHONE']);
    expect(stored.get('PHONE')).toBeUndefined();
    expect(stored.get('LAPTOP')?.previousId).toBe(0);

    // The service watches the devices whose long-polls wait in its process, `*` included.
    const phone = await newDevice();
    const laptop = { userId: phone.userId, deviceId: 'LAPTOP' };
    await database.db.insert(devices).values({ ...laptop, createdTs: Date.now() });
    const here = process_();
    const heard = new Map<string, NewMessages | undefined>();
    for (const device of [phone, laptop]) here.notifier.subscribe(device.userId, device.deviceId, (news) => heard.set(device.deviceId, news));
    await here.toDevice.send({ sender: '@a:test', senderDevice: 'A', type: 'm.test', origin: 'client', messages: { [phone.userId]: { '*': { n: 2 } } } });
    expect([...heard.keys()].sort()).toEqual(['LAPTOP', 'PHONE']);
    for (const news of heard.values()) {
      expect(news?.messages.map((m) => m.content)).toEqual(['{"n":2}']);
      expect(news?.previousId).toBe(0);
    }
  });
});

// Only PostgreSQL has a second connection to hold a device's row lock while an enqueue waits for it.
describe.skipIf(!usingPostgres())('the newest queued message an enqueue reports after waiting for a device lock', () => {
  async function waitForLockWaiter(): Promise<void> {
    for (let i = 0; i < 400; i++) {
      const [row] = await queryRows<{ n: number }>(database.db, sql`select count(*)::int as n from pg_locks where not granted`);
      if ((row?.n ?? 0) > 0) return;
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error('the enqueue never waited for the lock');
  }

  it('is the one the lock holder committed, in the batched statement and in the transaction path', async () => {
    const d = await newDevice();
    const inbox = new SendStatement(database.db);
    const send = (n: string) => ({ txn: null, sender: '@a:test', type: 'm.test', targets: [{ ...d, content: `{"n":"${n}"}` }], watch: [d] });
    for (const path of ['batched', 'transaction'] as const) {
      let waiting: Promise<number | null | undefined> = Promise.resolve(undefined);
      let holderIds: number[] = [];
      await database.db.transaction(async (tx) => {
        await new DeviceInboxStore(tx).lockTargetDevices([{ userId: d.userId, all: false, deviceIds: [d.deviceId] }]);
        waiting =
          path === 'batched'
            ? inbox.run([send('waiter')]).then(([r]) => r?.stored[0]?.news?.previousId)
            : // The transaction path: its devices locked first, then the send statement inside.
              database.db.transaction(async (tx2) => {
                await new DeviceInboxStore(tx2).lockTargetDevices([{ userId: d.userId, all: false, deviceIds: [d.deviceId] }]);
                const [r] = await new SendStatement(tx2).run([send('waiter')]);
                return r?.stored[0]?.news?.previousId;
              });
        await waitForLockWaiter();
        const [held] = await new SendStatement(tx).run([send('holder')]);
        holderIds = held?.stored[0]?.news?.messages.map((m) => m.streamId) ?? [];
      });
      // The waiter's statement started before the holder committed; what it reports must not.
      expect(await waiting, path).toBe(holderIds[0]);
    }
  });
});
