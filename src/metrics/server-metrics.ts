import { Gauge, type Registry } from 'prom-client';
import type { Logger } from '../logger.ts';
import type { Counters } from './counters.ts';
import type { Notifier } from '../runtime/notifier.ts';
import type { Db } from '../storage/drivers/database.ts';
import { OperationsStore } from '../storage/operations-store.ts';

/** How many of the longest device queues are exported, each labelled with its user and device. */
export const LARGEST_QUEUES = 5;

/**
 * The Prometheus view of one app: the counters and histograms in `counters.registry`, plus
 * gauges read when scraped — long-polls in flight from memory; queue depths from the database
 * (shared by every process, so any process reports the same), in a few aggregate queries.
 */
export class ServerMetrics {
  private readonly store: OperationsStore;
  private readonly queueTotal: Gauge<string>;
  private readonly largestQueues: Gauge<string>;
  private readonly federationQueue: Gauge<string>;
  private readonly appserviceQueue: Gauge<string>;
  private readonly scrapeErrors: Gauge<string>;
  /** One database read at a time: concurrent scrapes share it. */
  private refreshing: Promise<void> | null = null;

  constructor(
    private readonly counters: Counters,
    notifier: Notifier,
    db: Db,
    private readonly log: Logger,
  ) {
    this.store = new OperationsStore(db);
    const registers = [counters.registry];
    new Gauge({
      name: 'to_device_sync_long_polls',
      help: '/sync and sliding-sync requests of this process waiting for a message',
      registers,
      collect() {
        this.set(notifier.waiting);
      },
    });
    this.queueTotal = new Gauge({ name: 'to_device_queue_depth', help: 'Messages waiting in device queues (all devices, all processes)', registers });
    this.largestQueues = new Gauge({
      name: 'to_device_largest_queue_depth',
      help: `Messages waiting in the ${LARGEST_QUEUES} longest device queues`,
      labelNames: ['user_id', 'device_id'],
      registers,
    });
    this.federationQueue = new Gauge({ name: 'federation_queue_depth', help: 'Messages waiting in the federation outbox, per destination', labelNames: ['destination'], registers });
    this.appserviceQueue = new Gauge({ name: 'appservice_queue_depth', help: 'Messages waiting for each appservice', labelNames: ['appservice'], registers });
    this.scrapeErrors = new Gauge({ name: 'metrics_database_errors', help: '1 when the last scrape could not read queue depths from the database (they keep their previous values)', registers });
  }

  /** This app's registry; main adds prom-client's process metrics (CPU, memory, event loop) to it. */
  get registry(): Registry {
    return this.counters.registry;
  }

  get contentType(): string {
    return this.counters.registry.contentType;
  }

  /** The Prometheus text exposition, with the database gauges read afresh. */
  async render(): Promise<string> {
    this.refreshing ??= this.refresh().finally(() => (this.refreshing = null));
    await this.refreshing;
    return this.counters.registry.metrics();
  }

  private async refresh(): Promise<void> {
    try {
      const [total, largest, federation, appservices] = await Promise.all([
        this.store.deviceQueueTotal(),
        this.store.largestDeviceQueues(LARGEST_QUEUES),
        this.store.federationQueueDepths(),
        this.store.appserviceQueueDepths(),
      ]);
      this.queueTotal.set(total);
      this.largestQueues.reset();
      for (const q of largest) this.largestQueues.set({ user_id: q.userId, device_id: q.deviceId }, q.depth);
      this.federationQueue.reset();
      for (const [destination, n] of federation) this.federationQueue.set({ destination }, n);
      this.appserviceQueue.reset();
      for (const [appservice, n] of appservices) this.appserviceQueue.set({ appservice }, n);
      this.scrapeErrors.set(0);
    } catch (e) {
      this.scrapeErrors.set(1);
      this.log.warn('metrics: reading queue depths failed', { err: String(e) });
    }
  }
}
