import type { Db } from '../storage/database.ts';
import { DeviceInboxStore } from '../storage/device-inbox-store.ts';
import type { Notifier } from './notifier.ts';

export interface ToDeviceEvent {
  sender: string;
  type: string;
  content: Record<string, unknown>;
}

export interface ToDeviceBatch {
  events: ToDeviceEvent[];
  /** The to-device position to acknowledge with on the next request. */
  nextPosition: number;
}

export interface ToDeviceSyncInput {
  userId: string;
  deviceId: string;
  /** Position from the client's `since`; everything up to it is acknowledged. */
  since: number | null;
  limit: number;
  /** 0 answers at once; otherwise wait this long for a first message. */
  timeoutMs: number;
  signal?: AbortSignal;
}

/**
 * Delivery of a device's queue: acknowledge what the previous response carried, then return
 * the oldest pending messages, waiting for one when there are none.
 */
export class ToDeviceSyncService {
  constructor(
    private readonly db: Db,
    private readonly notifier: Notifier,
  ) {}

  async sync(input: ToDeviceSyncInput): Promise<ToDeviceBatch> {
    const store = new DeviceInboxStore(this.db);
    let since = input.since;
    if (since !== null && since > 0) {
      // A token beyond any id ever drawn (a restored database, a forged token) must not
      // acknowledge messages the client never saw: treat it as no token at all.
      if (since > (await store.maxStreamId())) since = null;
      else await store.deleteUpTo(input.userId, input.deviceId, since);
    }
    const after = since ?? 0;

    // Subscribe before reading, so a message stored between the read and the wait still wakes us.
    let wake: () => void = () => {};
    const woken = new Promise<void>((resolve) => (wake = resolve));
    const unsubscribe = this.notifier.subscribe(input.userId, input.deviceId, wake);
    try {
      let rows = await store.fetch(input.userId, input.deviceId, after, input.limit);
      if (rows.length === 0 && input.timeoutMs > 0 && !input.signal?.aborted) {
        await waitFor(woken, input.timeoutMs, input.signal);
        if (!input.signal?.aborted) rows = await store.fetch(input.userId, input.deviceId, after, input.limit);
      }
      const last = rows[rows.length - 1];
      return {
        events: rows.map((r) => ({ sender: r.sender, type: r.type, content: JSON.parse(r.content) as Record<string, unknown> })),
        nextPosition: last === undefined ? after : last.streamId,
      };
    } finally {
      unsubscribe();
    }
  }
}

function waitFor(woken: Promise<void>, timeoutMs: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, timeoutMs);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
    void woken.then(done);
  });
}
