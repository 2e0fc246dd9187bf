import type { Counters } from './counters.ts';
import { Notifier, type WakeUp } from '../runtime/notifier.ts';
import type { NewMessages } from '../storage/new-messages.ts';

export const WAKEUPS_COUNTER = 'to_device_sync_wakeups_total';

/**
 * The Notifier, counting each waiting /sync it wakes (`to_device_sync_wakeups_total`). It counts
 * at the moment of waking rather than wrapping each subscription, which would cost every parked
 * long-poll a closure for as long as it waits.
 */
export class CountingNotifier extends Notifier {
  constructor(private readonly counters: Counters) {
    super();
  }

  protected override wake(onWake: WakeUp, news: NewMessages | undefined): void {
    this.counters.inc(WAKEUPS_COUNTER);
    onWake(news);
  }
}
