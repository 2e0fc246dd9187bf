/**
 * Named event counters (messages dropped by reason, dispatch outcomes…). Kept minimal so the
 * metrics exporter can read them; names follow Prometheus conventions.
 */
export class Counters {
  private readonly values = new Map<string, number>();

  private static key(name: string, labels: Record<string, string>): string {
    const parts = Object.entries(labels)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, val]) => `${k}=${JSON.stringify(val)}`);
    return parts.length === 0 ? name : `${name}{${parts.join(',')}}`;
  }

  inc(name: string, labels: Record<string, string> = {}, by = 1): void {
    if (by === 0) return;
    const key = Counters.key(name, labels);
    this.values.set(key, (this.values.get(key) ?? 0) + by);
  }

  get(name: string, labels: Record<string, string> = {}): number {
    return this.values.get(Counters.key(name, labels)) ?? 0;
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries(this.values);
  }
}
