import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Notifier } from '../src/runtime/notifier.ts';
import { ToDeviceSyncService, type ToDeviceBatch } from '../src/services/sync.ts';
import type { Database } from '../src/storage/drivers/database.ts';
import { createTestDatabase } from './support/test-database.ts';

/**
 * The delivery service on its own, against a real database: how a long-poll ends (at once, on a
 * wake-up, at its timeout, on a failure) and that it never leaves a wait registered behind it.
 */
let database: Database;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await database?.close();
});

const input = (timeoutMs: number) => ({ userId: '@bob:test', deviceId: 'PHONE', since: null, limit: 100, timeoutMs });
const asIs = (batch: ToDeviceBatch) => batch;

describe('ToDeviceSyncService', () => {
  it('answers at once, with what respond makes of the batch, when there is no timeout', async () => {
    const notifier = new Notifier();
    const sync = new ToDeviceSyncService(database.db, notifier);
    const answer = await sync.sync(input(0), (batch) => ({ count: batch.events.length, next: batch.nextPosition }));
    expect(answer).toEqual({ count: 0, next: 0 });
    expect(notifier.waiting).toBe(0);
  });

  it('waits until woken, then reads again and answers', async () => {
    const notifier = new Notifier();
    const sync = new ToDeviceSyncService(database.db, notifier);
    let answered = false;
    const pending = sync.sync(input(60_000), asIs).then((batch) => {
      answered = true;
      return batch;
    });
    for (let i = 0; i < 100 && notifier.waiting === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(notifier.waiting).toBe(1);
    await new Promise((r) => setTimeout(r, 50));
    expect(answered).toBe(false);
    notifier.notify('@bob:test', 'PHONE');
    expect(await pending).toEqual({ events: [], nextPosition: 0 });
    expect(notifier.waiting).toBe(0);
  });

  it('answers empty at its timeout and stops waiting', async () => {
    const notifier = new Notifier();
    const sync = new ToDeviceSyncService(database.db, notifier);
    const started = Date.now();
    expect(await sync.sync(input(150), asIs)).toEqual({ events: [], nextPosition: 0 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(notifier.waiting).toBe(0);
  });

  it('rejects when respond throws, and stops waiting', async () => {
    const notifier = new Notifier();
    const sync = new ToDeviceSyncService(database.db, notifier);
    await expect(
      sync.sync(input(0), () => {
        throw new Error('respond failed');
      }),
    ).rejects.toThrow('respond failed');
    expect(notifier.waiting).toBe(0);
  });

  it('rejects when the database read fails, and leaves no wait registered', async () => {
    const broken = await createTestDatabase();
    await broken.close();
    const notifier = new Notifier();
    const sync = new ToDeviceSyncService(broken.db, notifier);
    await expect(sync.sync(input(60_000), asIs)).rejects.toThrow();
    expect(notifier.waiting).toBe(0);
  });
});
