import type { Counters } from './counters.ts';
import type { Notifier } from '../runtime/notifier.ts';
import { ToDeviceSyncService } from '../services/sync.ts';
import type { Db } from '../storage/drivers/database.ts';

export const DELIVERED_COUNTER = 'to_device_delivered_total';

/**
 * To-device delivery, counting the events it returns (`to_device_delivered_total`). It hooks
 * `delivered` rather than wrapping `sync` in an async method of its own, which would hold one
 * more suspended frame for every parked long-poll.
 */
export class CountingToDeviceSync extends ToDeviceSyncService {
  constructor(
    db: Db,
    notifier: Notifier,
    private readonly counters: Counters,
  ) {
    super(db, notifier);
  }

  protected override delivered(count: number): void {
    this.counters.inc(DELIVERED_COUNTER, {}, count);
  }
}
