import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClient, type ToDeviceEventJson } from './support/client.ts';
import { startTestApp, type TestApp } from './support/test-app.ts';

let t: TestApp;

beforeAll(async () => {
  t = await startTestApp();
});
afterAll(() => t.close());

describe('concurrent senders to one device', () => {
  it('loses nothing, duplicates nothing and keeps each sender\'s order while the device syncs', async () => {
    const SENDERS = 8;
    const PER_SENDER = 40;
    const target = await TestClient.register(t.app, 'target');
    const senders = await Promise.all(Array.from({ length: SENDERS }, (_, i) => TestClient.register(t.app, `sender${i}`)));

    const received: ToDeviceEventJson[] = [];
    let done = false;
    // The device syncs and acknowledges while the senders write, which is where a message
    // committed out of stream order would be skipped.
    const consumer = (async () => {
      const first = await target.sync();
      received.push(...first.to_device.events);
      let since: string | null = first.next_batch;
      for (;;) {
        const finished = done;
        const s = await target.sync({ since, timeout: finished ? 0 : 200 });
        received.push(...s.to_device.events);
        since = s.next_batch;
        if (finished && s.to_device.events.length === 0) return;
      }
    })();

    await Promise.all(
      senders.map(async (sender, i) => {
        for (let seq = 0; seq < PER_SENDER; seq++) {
          const res = await sender.sendToDevice('m.seq', { [target.userId]: { [target.deviceId]: { i, seq } } }, `s${seq}`);
          expect(res.status).toBe(200);
        }
      }),
    );
    done = true;
    await consumer;

    expect(received).toHaveLength(SENDERS * PER_SENDER);
    for (let i = 0; i < SENDERS; i++) {
      const mine = received.filter((e) => e.content.i === i).map((e) => e.content.seq);
      expect(mine).toEqual(Array.from({ length: PER_SENDER }, (_, k) => k));
      for (const e of received.filter((ev) => ev.content.i === i)) expect(e.sender).toBe(senders[i]?.userId);
    }
  });

  it('fans one request out to many devices while those devices are being deleted, without error', async () => {
    const owner = await TestClient.register(t.app, 'many');
    const devices = [owner, ...(await Promise.all(Array.from({ length: 10 }, () => TestClient.login(t.app, 'many'))))];
    const sender = await TestClient.register(t.app, 'fan');
    const sends = Array.from({ length: 10 }, (_, k) => sender.sendToDevice('m.fan', { [owner.userId]: { '*': { k } } }));
    const deletes = devices.slice(5).map((d) => d.request('POST', '/v3/logout'));
    const results = await Promise.all([...sends, ...deletes]);
    for (const r of results) expect(r.status).toBe(200);
    for (const d of devices.slice(0, 5)) {
      const s = await d.sync();
      expect(s.to_device.events.map((e) => e.content.k).sort((a, b) => Number(a) - Number(b))).toEqual(
        Array.from({ length: 10 }, (_, k) => k),
      );
    }
  });

  it('stores a txn id sent many times at once exactly once, however the sends are batched', async () => {
    const target = await TestClient.register(t.app, 'retried');
    const sender = await TestClient.register(t.app, 'impatient');
    // Same txn id ten times, interleaved with distinct ones, all in flight together: the
    // duplicates must land in different statements and all but the first must store nothing.
    // The first sends occupy the batcher's slots, so that the copies queue up together behind them.
    const sends = Array.from({ length: 20 }, (_, k) =>
      k % 2 === 0 && k >= 4
        ? sender.sendToDevice('m.retry', { [target.userId]: { [target.deviceId]: { k: 'same' } } }, 'once')
        : sender.sendToDevice('m.retry', { [target.userId]: { [target.deviceId]: { k } } }, `distinct${k}`),
    );
    const results = await Promise.all(sends);
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.body).toEqual({});
    }
    const got = (await target.sync()).to_device.events.map((e) => e.content.k);
    expect(got.filter((k) => k === 'same')).toHaveLength(1);
    expect(got.filter((k) => k !== 'same').sort((a, b) => Number(a) - Number(b))).toEqual([0, 1, 2, 3, 5, 7, 9, 11, 13, 15, 17, 19]);
  });
});
