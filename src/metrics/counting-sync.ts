import type { Counters } from '../services/counters.ts';
import type { Notifier } from '../services/notifier.ts';
import { ToDeviceSyncService, type ToDeviceBatch, type ToDeviceSyncInput } from '../services/sync.ts';
import type { Db } from '../storage/database.ts';

export const DELIVERED_COUNTER = 'to_device_delivered_total';

/** To-device delivery, counting the events it returns (`to_device_delivered_total`). */
export class CountingToDeviceSync extends ToDeviceSyncService {
  constructor(
    db: Db,
    notifier: Notifier,
    private readonly counters: Counters,
  ) {
    super(db, notifier);
  }

  override async sync(input: ToDeviceSyncInput): Promise<ToDeviceBatch> {
    const batch = await super.sync(input);
    this.counters.inc(DELIVERED_COUNTER, {}, batch.events.length);
    return batch;
  }
}
