import type { Config } from '../config/config.ts';
import type { Logger } from '../logger.ts';
import { loadHandlerModules } from '../server-user/loader.ts';
import { checkModules, HandlerLoadError, type HandlerToLoad } from '../server-user/module-checks.ts';

export interface HandlersReport {
  metrics_url: string | null;
  counters_available: boolean;
  modules: { name: string; event_types: { type: string; counts?: Record<string, number> }[] }[];
}

/**
 * `admin handlers`: the configured modules and their event types, with the dispatch counters of
 * the running server. The counters live in that server's memory, so they are read from its
 * metrics listener; no database is opened, which is what lets this run beside a server on
 * PGlite (whose data directory only one process may open).
 */
export async function handlersReport(config: Config, opts: { metricsUrl: string | undefined; handlers?: readonly HandlerToLoad[]; log: Logger }): Promise<HandlersReport> {
  const { checked, problems } = checkModules(opts.handlers ?? (await loadHandlerModules(config.handlers)));
  if (problems.length > 0) throw new HandlerLoadError(problems);
  const url = opts.metricsUrl ?? defaultMetricsUrl(config);
  const counts = url === null ? null : await scrapeDispatchCounts(url, opts.log);
  return {
    metrics_url: url,
    counters_available: counts !== null,
    modules: checked.map(({ module }) => ({
      name: module.name,
      event_types: Object.keys(module.events).map((type) => ({ type, ...(counts === null ? {} : { counts: counts.get(type) ?? {} }) })),
    })),
  };
}

export function formatHandlersReport(report: HandlersReport, config: Config): string {
  const lines = report.modules.map((m) => `${m.name}\n${m.event_types.map((t) => `  ${t.type}${t.counts === undefined ? '' : `  ${formatCounts(t.counts)}`}`).join('\n')}`);
  let note = '';
  if (!report.counters_available) {
    note =
      report.metrics_url === null
        ? '\n(dispatch counters unavailable: metrics are disabled (metrics.enabled); they are kept only in the running server, which shows them on its metrics listener)\n'
        : `\n(dispatch counters unavailable: no answer from ${report.metrics_url}. They are kept in the running server's memory: ` +
          `start it, or give its metrics listener with --metrics-url if it is not metrics.host:metrics.port of this configuration (${config.metrics.host}:${config.metrics.port}))\n`;
  }
  return `${lines.join('\n')}\n${note}`;
}

function defaultMetricsUrl(config: Config): string | null {
  if (!config.metrics.enabled) return null;
  const host = config.metrics.host === '0.0.0.0' ? '127.0.0.1' : config.metrics.host === '::' ? '[::1]' : config.metrics.host.includes(':') ? `[${config.metrics.host}]` : config.metrics.host;
  return `http://${host}:${config.metrics.port}/metrics`;
}

/** type → outcome → count, from the server's Prometheus text; null when it does not answer. */
async function scrapeDispatchCounts(url: string, log: Logger): Promise<Map<string, Record<string, number>> | null> {
  let text: string;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(3_000) });
    if (!res.ok) return null;
    text = await res.text();
  } catch (e) {
    log.debug('metrics scrape failed', { url, err: String(e) });
    return null;
  }
  const counts = new Map<string, Record<string, number>>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('server_user_dispatch_total{')) continue;
    const labels = Object.fromEntries([...line.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], (m[2] ?? '').replace(/\\(.)/g, (_, ch: string) => (ch === 'n' ? '\n' : ch))]));
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    const type = labels.type;
    const outcome = labels.outcome;
    if (type === undefined || outcome === undefined || !Number.isFinite(value)) continue;
    const byOutcome = counts.get(type) ?? {};
    byOutcome[outcome] = value;
    counts.set(type, byOutcome);
  }
  return counts;
}

function formatCounts(counts: Record<string, number>): string {
  const entries = Object.entries(counts);
  return entries.length === 0 ? 'no messages yet' : entries.map(([k, n]) => `${k}=${n}`).join(' ');
}
