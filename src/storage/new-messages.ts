import type { DeliveredMessage } from './device-inbox-store.ts';

/**
 * What one enqueue stored for one device, passed with the wake-up so that the device's waiting
 * long-polls can answer without reading the queue again.
 *
 * Only a poll whose own read saw the device's last stream id at `previousId` may use it: every
 * enqueue moves that id under the device's row lock, so no other message for the device was
 * committed between that read and this enqueue, and these messages are all the poll is owed. Any
 * other poll reads the queue as before. A class, so that `instanceof` tells it apart from whatever
 * else a wake-up is called with (an abort event).
 */
export class NewMessages {
  constructor(
    readonly previousId: number,
    /** In stream order. */
    readonly messages: readonly DeliveredMessage[],
  ) {}
}
