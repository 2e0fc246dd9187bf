import type { Db } from '../storage/database.ts';
import { DeviceInboxStore } from '../storage/device-inbox-store.ts';
import { LongPoll, type ClientConnection } from './long-poll.ts';
import type { Notifier } from './notifier.ts';

export interface ToDeviceEvent {
  sender: string;
  type: string;
  /** The content as stored: JSON text, spliced into responses without a parse. */
  contentJson: string;
}

/** `{sender, type, content}` JSON for a list of events, built without re-parsing contents. */
export function toDeviceEventsJson(events: readonly ToDeviceEvent[]): string {
  return `[${events.map((e) => `{"sender":${JSON.stringify(e.sender)},"type":${JSON.stringify(e.type)},"content":${e.contentJson}}`).join(',')}]`;
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
  /** The client's connection: when it closes, the wait ends and nothing more is fetched. */
  connection?: ClientConnection;
}

/**
 * Delivery of a device's queue: acknowledge what the previous response carried, then return
 * the oldest pending messages, waiting for one when there are none.
 */
export class ToDeviceSyncService {
  private readonly store: DeviceInboxStore;

  constructor(
    db: Db,
    private readonly notifier: Notifier,
  ) {
    this.store = new DeviceInboxStore(db);
  }

  async sync(input: ToDeviceSyncInput): Promise<ToDeviceBatch> {
    const store = this.store;
    // Subscribe before reading, so a message stored between the read and the wait still wakes us.
    const poll = new LongPoll();
    this.notifier.subscribe(input.userId, input.deviceId, poll.wake);
    try {
      // A token beyond any id ever drawn (a restored database, a forged token) must not
      // acknowledge messages the client never saw: it counts as no token (after = 0).
      const first =
        input.since === null || input.since === 0
          ? { after: 0, rows: await store.fetch(input.userId, input.deviceId, 0, input.limit) }
          : await store.ackAndFetch(input.userId, input.deviceId, input.since, input.limit);
      const after = first.after;
      let rows = first.rows;
      if (rows.length === 0 && input.timeoutMs > 0 && !isClosed(input.connection)) {
        await poll.wait(input.timeoutMs, input.connection);
        if (!isClosed(input.connection)) rows = await store.fetch(input.userId, input.deviceId, after, input.limit);
      }
      const last = rows[rows.length - 1];
      this.delivered(rows.length);
      return {
        events: rows.map((r) => ({ sender: r.sender, type: r.type, contentJson: r.content })),
        nextPosition: last === undefined ? after : last.streamId,
      };
    } finally {
      this.notifier.unsubscribe(input.userId, input.deviceId, poll.wake);
    }
  }

  /** Called with the number of events each response carries; a subclass counts them. */
  protected delivered(_count: number): void {}
}

/** A function, not an inline test, so the check after the wait is not narrowed away by the one before it. */
function isClosed(connection: ClientConnection | undefined): boolean {
  return connection?.destroyed === true;
}
