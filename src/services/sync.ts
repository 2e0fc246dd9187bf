import type { Db } from '../storage/database.ts';
import { DeviceInboxStore, type DeliveredMessage } from '../storage/device-inbox-store.ts';
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

  /**
   * Acknowledges, reads, and if there is nothing, waits and reads again; the answer is
   * `respond(batch)`. Written with callbacks around one promise rather than as an async function
   * with a `.then` for the caller: a parked long-poll holds whatever is suspended for minutes, and
   * a server holds tens of thousands of them. This way a parked poll holds one promise, the
   * LongPoll and a few closures, not suspended frames and a chain of promises.
   */
  sync<T>(input: ToDeviceSyncInput, respond: (batch: ToDeviceBatch) => T): Promise<T> {
    const { store, notifier } = this;
    const { userId, deviceId, limit, connection } = input;
    return new Promise<T>((resolve, reject) => {
      // Subscribe before reading, so a message stored between the read and the wait still wakes us.
      const poll = new LongPoll();
      notifier.subscribe(userId, deviceId, poll.wake);
      const fail = (e: unknown): void => {
        notifier.unsubscribe(userId, deviceId, poll.wake);
        reject(e);
      };
      const finish = (after: number, rows: readonly DeliveredMessage[]): void => {
        notifier.unsubscribe(userId, deviceId, poll.wake);
        try {
          resolve(respond(this.batch(after, rows)));
        } catch (e) {
          reject(e);
        }
      };
      // A token beyond any id ever drawn (a restored database, a forged token) must not
      // acknowledge messages the client never saw: it counts as no token (after = 0).
      const first =
        input.since === null || input.since === 0
          ? store.fetch(userId, deviceId, 0, limit).then((rows) => ({ after: 0, rows }))
          : store.ackAndFetch(userId, deviceId, input.since, limit);
      first.then(({ after, rows }) => {
        if (rows.length > 0 || input.timeoutMs <= 0 || isClosed(connection)) return finish(after, rows);
        poll.wait(input.timeoutMs, connection, () => {
          // A client that has gone gets nothing more fetched, so nothing is acknowledged for it.
          if (isClosed(connection)) finish(after, []);
          else store.fetch(userId, deviceId, after, limit).then((more) => finish(after, more), fail);
        });
      }, fail);
    });
  }

  private batch(after: number, rows: readonly DeliveredMessage[]): ToDeviceBatch {
    const last = rows[rows.length - 1];
    this.delivered(rows.length);
    return {
      events: rows.map((r) => ({ sender: r.sender, type: r.type, contentJson: r.content })),
      nextPosition: last === undefined ? after : last.streamId,
    };
  }

  /** Called with the number of events each response carries; a subclass counts them. */
  protected delivered(_count: number): void {}
}

/** A function, not an inline test, so the check after the wait is not narrowed away by the one before it. */
function isClosed(connection: ClientConnection | undefined): boolean {
  return connection?.destroyed === true;
}
