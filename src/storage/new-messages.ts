import type { DeliveredMessage } from './device-inbox-store.ts';

/**
 * What one enqueue stored for one device, passed with the wake-up so that the device's waiting
 * long-polls can answer without reading the queue again.
 *
 * `previousId` is the newest message the device had queued besides these, read once the enqueue
 * held the device's row lock; stream ids are drawn under that lock, so every message of the
 * device with a smaller id was committed by then. A poll positioned at or past `previousId` has
 * therefore been owed nothing else: these messages are all of it. Any other poll reads the queue
 * as before. A class, so that `instanceof` tells it apart from whatever else a wake-up is called
 * with (an abort event).
 */
export class NewMessages {
  constructor(
    readonly previousId: number,
    /** In stream order. */
    readonly messages: readonly DeliveredMessage[],
  ) {}
}
