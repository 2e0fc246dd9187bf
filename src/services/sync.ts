import type { Db } from '../storage/drivers/database.ts';
import { DeviceInboxStore, type DeliveredMessage } from '../storage/device-inbox-store.ts';
import { NewMessages } from '../storage/new-messages.ts';
import { LongPoll, type ClientConnection } from '../runtime/long-poll.ts';
import type { Notifier } from '../runtime/notifier.ts';
import { requestRowIds } from './stale-requests.ts';

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
  /**
   * Whether something other than to-device messages is waiting for the client (device-list
   * changes): then the poll answers at once instead of waiting. Asked after subscribing, so a
   * change that lands meanwhile still wakes the poll.
   */
  otherNews?: () => Promise<boolean>;
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
   * `respond(batch)`. Not an async function with a `.then` for the caller: a parked long-poll
   * holds whatever is suspended for minutes, and a server holds tens of thousands of them. A
   * PendingSync holds all of a parked poll's state in one object, around one promise.
   */
  sync<T>(input: ToDeviceSyncInput, respond: (batch: ToDeviceBatch) => T): Promise<T> {
    return new PendingSync(this, this.store, this.notifier, input, respond).start(input.otherNews);
  }

  /** The batch answering a sync, counted (see `delivered`). */
  batchOf(after: number, rows: readonly DeliveredMessage[]): ToDeviceBatch {
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

/** One /sync request, from its first read to its answer. */
class PendingSync<T> extends LongPoll {
  // Copied out of the input, so that a parked poll does not keep the whole input object.
  private readonly userId: string;
  private readonly deviceId: string;
  private readonly since: number | null;
  private readonly limit: number;
  private readonly timeoutMs: number;
  private readonly connection: ClientConnection | undefined;
  private after = 0;
  private news: NewMessages | null = null;
  private resolve: (answer: T) => void = noop;
  private reject: (e: unknown) => void = noop;

  constructor(
    private readonly service: ToDeviceSyncService,
    private readonly store: DeviceInboxStore,
    private readonly notifier: Notifier,
    input: ToDeviceSyncInput,
    private readonly respond: (batch: ToDeviceBatch) => T,
  ) {
    super();
    this.userId = input.userId;
    this.deviceId = input.deviceId;
    this.since = input.since;
    this.limit = input.limit;
    this.timeoutMs = input.timeoutMs;
    this.connection = input.connection;
  }

  start(otherNewsOf?: () => Promise<boolean>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
      // Subscribe before reading, so a message stored between the read and the wait still wakes us.
      this.notifier.subscribe(this.userId, this.deviceId, this.wake);
      // A token beyond any id ever drawn (a restored database, a forged token) must not
      // acknowledge messages the client never saw: it counts as no token (after = 0).
      const first =
        this.since === null || this.since === 0
          ? this.store.fetch(this.userId, this.deviceId, 0, this.limit).then((rows) => ({ after: 0, rows }))
          : this.store.ackAndFetch(this.userId, this.deviceId, this.since, this.limit);
      const otherNews = this.timeoutMs > 0 && otherNewsOf !== undefined ? otherNewsOf() : null;
      (otherNews === null ? first.then((r) => ({ ...r, news: false })) : Promise.all([first, otherNews]).then(([r, news]) => ({ ...r, news }))).then(
        ({ after, rows, news }) => {
          this.after = after;
          try {
            if (rows.length > 0 || news || this.timeoutMs <= 0 || isClosed(this.connection)) this.finish(rows);
            else this.park(this.timeoutMs, this.connection);
          } catch (e) {
            // Nothing awaits this callback's promise: a throw here must answer the request, not go unhandled.
            this.fail(e);
          }
        },
        (e: unknown) => this.fail(e),
      );
    });
  }

  protected override heard(news: unknown): void {
    if (news instanceof NewMessages) this.news = news;
  }

  protected ended(): void {
    // A client that has gone gets nothing more fetched, so nothing is acknowledged for it.
    if (isClosed(this.connection)) this.finish([]);
    else if (this.news !== null && this.news.previousId <= this.after) {
      // Nothing the device had queued before the enqueue that woke us is past our position, so
      // that enqueue's messages are everything pending: answering from them saves the read, one
      // database round trip.
      const after = this.after;
      this.finish(this.news.messages.filter((m) => m.streamId > after).slice(0, this.limit));
    } else {
      this.store.fetch(this.userId, this.deviceId, this.after, this.limit).then(
        (rows) => this.finish(rows),
        (e: unknown) => this.fail(e),
      );
    }
  }

  private finish(rows: readonly DeliveredMessage[]): void {
    this.notifier.unsubscribe(this.userId, this.deviceId, this.wake);
    // MSC3944 (see stale-requests.ts): key and secret requests are recorded as read before a
    // response carries them, and any a cancellation removed since they were read are left out.
    // Only a response with such a message pays this statement.
    const requests = requestRowIds(rows);
    if (requests !== null) {
      const asked = requests;
      this.store.recordRequestsRead(this.userId, this.deviceId, [...asked]).then(
        (kept) => this.answer(rows.filter((r) => !asked.has(r.streamId) || kept.has(r.streamId))),
        (e: unknown) => this.reject(e),
      );
      return;
    }
    this.answer(rows);
  }

  private answer(rows: readonly DeliveredMessage[]): void {
    try {
      this.resolve(this.respond(this.service.batchOf(this.after, rows)));
    } catch (e) {
      this.reject(e);
    }
  }

  private fail(e: unknown): void {
    this.notifier.unsubscribe(this.userId, this.deviceId, this.wake);
    this.reject(e);
  }
}

function noop(): void {}

/** A function, not an inline test, so the check after the wait is not narrowed away by the one before it. */
function isClosed(connection: ClientConnection | undefined): boolean {
  return connection?.destroyed === true;
}
