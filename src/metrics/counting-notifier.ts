import type { Counters } from '../services/counters.ts';
import { Notifier } from '../services/notifier.ts';

export const WAKEUPS_COUNTER = 'to_device_sync_wakeups_total';

/** The Notifier, counting each waiting /sync it wakes (`to_device_sync_wakeups_total`). */
export class CountingNotifier extends Notifier {
  constructor(private readonly counters: Counters) {
    super();
  }

  override subscribe(userId: string, deviceId: string, onWake: () => void): () => void {
    return super.subscribe(userId, deviceId, () => {
      this.counters.inc(WAKEUPS_COUNTER);
      onWake();
    });
  }
}
