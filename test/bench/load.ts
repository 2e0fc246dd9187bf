/**
 * The load generator, run as its own process by run.ts: autocannon's programmatic API (so each
 * request can get a distinct path, i.e. a distinct txnId), one warm-up run, then the measured
 * run. Reads a LoadSpec as JSON from argv[2], prints one LoadResult as JSON on stdout.
 */
import { createRequire } from 'node:module';

export interface LoadSpec {
  url: string;
  method: 'PUT' | 'POST' | 'GET';
  /** Each request goes to `${pathPrefix}/${runTag}-${n}`: distinct txnIds. */
  pathPrefix: string;
  /** Every request to `pathPrefix` itself (an endpoint without a txnId, e.g. /keys/claim). */
  fixedPath?: boolean;
  headers: Record<string, string>;
  body: string;
  /**
   * Requests taking turns: request n has variant n mod length's headers (over `headers`) and body
   * (instead of `body`), e.g. several senders' tokens and several recipients.
   */
  variants?: { headers: Record<string, string>; body: string }[];
  connections: number;
  warmupSeconds: number;
  /** Measured run: a duration in seconds, or a fixed number of requests. */
  durationSeconds?: number;
  amount?: number;
}

export interface LoadResult {
  reqPerSec: number;
  p50: number;
  p99: number;
  /** Requests answered 2xx in warm-up and measured runs together. */
  ok2xx: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  seconds: number;
  /** When the measured run began (Date.now()): a scenario times what follows from its first request. */
  startedAt: number;
}

interface RawRequest {
  path?: string;
  headers?: Record<string, string>;
  body?: string;
}

interface AutocannonRequest {
  method?: string;
  path?: string;
  setupRequest?: (req: RawRequest) => RawRequest;
}

interface AutocannonOptions {
  url: string;
  connections: number;
  duration?: number;
  amount?: number;
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  requests?: AutocannonRequest[];
  timeout?: number;
}

interface Histogram {
  average: number;
  p50: number;
  p99: number;
}

interface AutocannonResult {
  requests: Histogram & { total: number };
  latency: Histogram;
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  '2xx': number;
}

// autocannon ships no types; this is the part of its API we use.
const autocannon = createRequire(import.meta.url)('autocannon') as (
  opts: AutocannonOptions,
  cb: (err: Error | null, result: AutocannonResult) => void,
) => { on(event: 'response', listener: () => void): void };

/** A run's result, and when its last response came: with a fixed amount, autocannon stops only at its next 1 s tick. */
function run(spec: LoadSpec, tag: string, measured: boolean): Promise<AutocannonResult & { lastResponseAt: number }> {
  let lastResponseAt = Number.NaN;
  let n = 0;
  const opts: AutocannonOptions = {
    url: spec.url,
    connections: spec.connections,
    method: spec.method,
    headers: spec.headers,
    body: spec.body,
    timeout: 30,
    requests: [
      {
        method: spec.method,
        setupRequest: (req) => {
          const variant = spec.variants?.[n % spec.variants.length];
          req.path = spec.fixedPath === true ? spec.pathPrefix : `${spec.pathPrefix}/${tag}-${n}`;
          n++;
          if (variant !== undefined) {
            req.headers = { ...spec.headers, ...variant.headers };
            req.body = variant.body;
          }
          return req;
        },
      },
    ],
  };
  if (!measured) opts.duration = spec.warmupSeconds;
  else if (spec.amount !== undefined) opts.amount = spec.amount;
  else opts.duration = spec.durationSeconds ?? 10;
  return new Promise((resolve, reject) => {
    autocannon(opts, (err, result) => (err ? reject(err) : resolve({ ...result, lastResponseAt }))).on('response', () => {
      lastResponseAt = Date.now();
    });
  });
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '') as LoadSpec;
  const tag = `${process.pid}-${Date.now()}`;
  let warm: AutocannonResult | null = null;
  if (spec.warmupSeconds > 0) warm = await run(spec, `${tag}w`, false);
  const startedAt = Date.now();
  const r = await run(spec, `${tag}m`, true);
  const result: LoadResult = {
    // For a fixed amount the per-second histogram misses the partial last second, and autocannon's
    // duration runs on to its next whole second: total over the time to the last answer.
    reqPerSec: spec.amount !== undefined ? r.requests.total / ((r.lastResponseAt - startedAt) / 1000) : r.requests.total / r.duration,
    p50: r.latency.p50,
    p99: r.latency.p99,
    ok2xx: r['2xx'] + (warm?.['2xx'] ?? 0),
    non2xx: r.non2xx + (warm?.non2xx ?? 0),
    errors: r.errors + (warm?.errors ?? 0),
    timeouts: r.timeouts + (warm?.timeouts ?? 0),
    seconds: r.duration,
    startedAt,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((e: unknown) => {
  console.error('load generator failed:', e);
  process.exit(1);
});
