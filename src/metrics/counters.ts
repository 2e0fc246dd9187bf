import { createRequire } from 'node:module';
import type * as PromClient from 'prom-client';
import type { Counter, Histogram, Registry } from 'prom-client';
import { STALE_DROPPED } from '../services/stale-requests.ts';

/**
 * prom-client, loaded by the first Counters that exports: counters kept in memory only (a test
 * kit's) never load it, and loading it was a large share of what a kit's start spends beyond
 * PGlite (see test/bench/kit-scenario.ts).
 */
let loaded: typeof PromClient | null = null;
function promClient(): typeof PromClient {
  return (loaded ??= createRequire(import.meta.url)('prom-client') as typeof PromClient);
}

/**
 * Named event counters (messages dropped by reason, dispatch outcomes…) and latency histograms,
 * exported in the Prometheus format from this app's own `registry` (never prom-client's global
 * one: a process may hold several apps, as the tests do). Names follow Prometheus conventions.
 *
 * `get` and `snapshot` read exact values kept beside the exported metrics, so tests and the
 * code stay synchronous; the export caps each metric's label combinations (see MAX_SERIES).
 */
export class Counters {
  private readonly exportedTo: Registry | null;
  private readonly values = new Map<string, number>();
  private readonly counters = new Map<string, Exported<Counter<string>>>();
  private readonly histograms = new Map<string, Exported<Histogram<string>>>();

  /** Counters exported to `registry` (a new one when none is given). */
  constructor(registry?: Registry);
  /** Counters kept in memory only (`get`, `snapshot`), with no Prometheus export: a test kit's. */
  constructor(registry: null);
  constructor(registry?: Registry | null) {
    this.exportedTo = registry === null ? null : (registry ?? new (promClient().Registry)());
    if (this.exportedTo === null) return;
    for (const [name, spec] of Object.entries(COUNTERS)) {
      const exported = this.counter(name, spec.labelNames, spec.help);
      // Known label values start at 0, so rate() works from the first increment on.
      for (const labels of 'initial' in spec ? spec.initial : []) exported.metric.inc(labels, 0);
    }
    for (const [name, spec] of Object.entries(HISTOGRAMS)) this.histogram(name, spec.labelNames, spec.help, spec.buckets);
  }

  /** Where the metrics are exported; counters made with `new Counters(null)` have none. */
  get registry(): Registry {
    if (this.exportedTo === null) throw new Error('these counters are kept in memory only (new Counters(null)): they have no registry');
    return this.exportedTo;
  }

  private static key(name: string, labels: Record<string, string>): string {
    const parts = Object.entries(labels)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, val]) => `${k}=${JSON.stringify(val)}`);
    return parts.length === 0 ? name : `${name}{${parts.join(',')}}`;
  }

  inc(name: CounterName, labels: Record<string, string> = {}, by = 1): void {
    if (!Object.hasOwn(COUNTERS, name)) throw new Error(`${name} is not a declared counter (COUNTERS)`);
    if (by === 0) return;
    const key = Counters.key(name, labels);
    this.values.set(key, (this.values.get(key) ?? 0) + by);
    const exported = this.counters.get(name);
    if (by < 0 || exported === undefined) return; // a Prometheus counter only goes up
    const bounded = boundLabels(exported, labels);
    if (bounded !== null) exported.metric.inc(bounded, by);
  }

  get(name: CounterName, labels: Record<string, string> = {}): number {
    return this.values.get(Counters.key(name, labels)) ?? 0;
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries(this.values);
  }

  /** Records one duration (in seconds) in a histogram (see HISTOGRAMS for the known ones). */
  observe(name: HistogramName, labels: Record<string, string>, seconds: number): void {
    if (!Object.hasOwn(HISTOGRAMS, name)) throw new Error(`${name} is not a declared histogram (HISTOGRAMS)`);
    const exported = this.histograms.get(name);
    if (exported === undefined) return;
    const bounded = boundLabels(exported, labels);
    if (bounded !== null) exported.metric.observe(bounded, seconds);
  }

  private counter(name: string, labelNames: readonly string[], help: string): Exported<Counter<string>> {
    const exported = { metric: new (promClient().Counter)({ name, help, labelNames, registers: [this.registry] }), labelNames: new Set(labelNames), series: new Set<string>() };
    this.counters.set(name, exported);
    return exported;
  }

  private histogram(name: string, labelNames: readonly string[], help: string, buckets: readonly number[]): Exported<Histogram<string>> {
    const metric = new (promClient().Histogram)({ name, help, labelNames, buckets: [...buckets], registers: [this.registry] });
    const exported = { metric, labelNames: new Set(labelNames), series: new Set<string>() };
    this.histograms.set(name, exported);
    return exported;
  }
}

interface Exported<M> {
  metric: M;
  labelNames: Set<string>;
  /** Label combinations seen, to cap them. */
  series: Set<string>;
}

/**
 * Some label values come from outside (event types sent to the server user, destinations named
 * in user IDs): past this many combinations per metric, new ones are folded into one series
 * whose labels are all `_other`, so a hostile client cannot grow the scrape without bound.
 */
export const MAX_SERIES = 1000;
const OTHER = '_other';

function boundLabels(exported: Exported<unknown>, labels: Record<string, string>): Record<string, string> | null {
  // A label the metric was not declared with would make prom-client throw: keep the exact
  // value (get/snapshot) and leave the export alone.
  for (const k of Object.keys(labels)) if (!exported.labelNames.has(k)) return null;
  if (exported.labelNames.size === 0) return labels;
  const key = JSON.stringify([...exported.labelNames].map((k) => labels[k] ?? ''));
  if (exported.series.has(key)) return labels;
  if (exported.series.size < MAX_SERIES) {
    exported.series.add(key);
    return labels;
  }
  return Object.fromEntries([...exported.labelNames].map((k) => [k, OTHER]));
}

const DEFAULT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

interface CounterSpec {
  help: string;
  labelNames: readonly string[];
  initial?: readonly Record<string, string>[];
}

/**
 * Messages written into device queues (one per target device; `*` counts each device it reached).
 * The send path increments it after its transaction commits; named here so the metric and its
 * one caller cannot drift apart.
 */
export const STORED_COUNTER = 'to_device_stored_total';

/** The counters the server increments, declared up front for their help text. */
export const LAZY_COMMIT_FLUSHES = 'to_device_lazy_commit_flushes_total';

export const COUNTERS = {
  [STORED_COUNTER]: { help: 'To-device messages stored into device queues (one per target device)', labelNames: [] },
  to_device_delivered_total: { help: 'To-device events returned by /sync and sliding sync (a redelivery of an unacknowledged event counts again)', labelNames: [] },
  to_device_dropped_total: {
    help: 'To-device messages not stored, by reason',
    labelNames: ['reason'],
    initial: ['invalid_user', 'unknown_user', 'unknown_device', 'server_user_device', 'not_local', 'duplicate_edu', 'no_handler', 'queue_cap', 'ttl'].map((reason) => ({ reason })),
  },
  [STALE_DROPPED]: {
    help: 'MSC3944: undelivered key/secret requests removed by their cancellation, and those cancellations (not stored), by event type',
    labelNames: ['type'],
    initial: [{ type: 'm.room_key_request' }, { type: 'm.secret.request' }],
  },
  [LAZY_COMMIT_FLUSHES]: {
    help: 'Flushes made to put a lazily committed txn claim on disk before answering (none when a later commit had flushed it)',
    labelNames: [],
  },
  to_device_sync_wakeups_total: { help: 'Waiting /sync long-polls woken by a new message (or by shutdown)', labelNames: [] },
  server_user_dispatch_total: { help: 'Messages to the server user (MSC4246) by event type and outcome', labelNames: ['type', 'outcome'] },
  federation_transactions_sent_total: { help: 'Federation transactions acknowledged by the destination', labelNames: ['destination'] },
  federation_messages_sent_total: { help: 'To-device messages in acknowledged federation transactions', labelNames: ['destination'] },
  federation_send_failures_total: { help: 'Failed federation send attempts (each is retried with backoff)', labelNames: ['destination'] },
  federation_edus_rejected_total: { help: 'Inbound m.direct_to_device EDUs rejected, by reason', labelNames: ['reason'] },
  appservice_transactions_sent_total: { help: 'Appservice transactions acknowledged by the appservice', labelNames: ['appservice'] },
  appservice_messages_sent_total: { help: 'To-device messages in acknowledged appservice transactions', labelNames: ['appservice'] },
  appservice_send_failures_total: { help: 'Failed appservice send attempts (each is retried with backoff)', labelNames: ['appservice'] },
} as const satisfies Record<string, CounterSpec>;

/** A counter's name: only declared ones, so a typo fails the type check instead of making a new metric. */
export type CounterName = keyof typeof COUNTERS;

export const DISPATCH_SECONDS = 'server_user_dispatch_duration_seconds';
export const FEDERATION_SEND_SECONDS = 'federation_send_duration_seconds';
export const APPSERVICE_SEND_SECONDS = 'appservice_send_duration_seconds';
export const HTTP_REQUEST_SECONDS = 'http_request_duration_seconds';
/** Not a duration: how many sends each group-commit statement carried. */
export const GROUP_COMMIT_BATCH_SIZE = 'to_device_group_commit_batch_size';

/** The histograms, declared up front for their help text and buckets. */
export const HISTOGRAMS = {
  [DISPATCH_SECONDS]: { help: 'Time from dispatch to the handler finishing (or the deadline), by event type and outcome', labelNames: ['type', 'outcome'], buckets: DEFAULT_BUCKETS },
  [FEDERATION_SEND_SECONDS]: { help: 'Duration of federation transaction requests, by destination and outcome (ok, error)', labelNames: ['destination', 'outcome'], buckets: [...DEFAULT_BUCKETS, 30] },
  [APPSERVICE_SEND_SECONDS]: { help: 'Duration of appservice transaction requests, by appservice and outcome (ok, error)', labelNames: ['appservice', 'outcome'], buckets: [...DEFAULT_BUCKETS, 30] },
  [GROUP_COMMIT_BATCH_SIZE]: {
    help: 'Sends (requests, federation EDUs, handler replies) stored per group-commit statement',
    labelNames: [],
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 500],
  },
  [HTTP_REQUEST_SECONDS]: {
    help: 'HTTP requests by method, route and status; /sync long-polls included',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
  },
} as const satisfies Record<string, { help: string; labelNames: readonly string[]; buckets: readonly number[] }>;

/** A histogram's name: only declared ones. */
export type HistogramName = keyof typeof HISTOGRAMS;
