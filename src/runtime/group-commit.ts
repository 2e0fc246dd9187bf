/**
 * Group commit: callers hand in items; items that arrive while a batch is in the database go
 * together in the next batch, as one statement. Under load this turns N round trips (and N takes
 * of the same row locks) into one; an idle caller waits for nobody but one event-loop turn.
 */
export interface GroupCommitOptions<I, O> {
  /** Runs one batch; answers one result per item, in the items' order. */
  flush: (items: readonly I[]) => Promise<O[]>;
  /** Batches in flight at once. */
  concurrency: number;
  /** Most items in one batch. */
  maxItems: number;
  /** Most total weight in one batch (a group heavier than this still goes, alone). */
  maxWeight: number;
  weightOf: (item: I) => number;
  /**
   * Items with the same non-null key never share a batch: the second waits for a later one, so
   * a batch can tell which of them was first (the same txn id sent twice at once).
   */
  keyOf: (item: I) => string | null;
  /** Told each batch's item count as it starts (a metric: how much the batching gathers). */
  onBatch?: (items: number) => void;
}

/** Items handed in together: they share a batch and fail or succeed together. */
interface Group<I, O> {
  items: readonly I[];
  weight: number;
  keys: string[];
  resolve: (o: O[]) => void;
  reject: (e: unknown) => void;
}

export class GroupCommit<I, O> {
  private pending: Group<I, O>[] = [];
  private inFlight = 0;
  private scheduled = false;

  constructor(private readonly opts: GroupCommitOptions<I, O>) {}

  run(item: I): Promise<O> {
    return this.runAll([item]).then((out) => out[0] as O);
  }

  /**
   * Runs the items in one batch (with others, or alone if they outweigh a batch): one statement,
   * so either all of them are stored or none. Keys among them must be distinct.
   */
  runAll(items: readonly I[]): Promise<O[]> {
    if (items.length === 0) return Promise.resolve([]);
    return new Promise<O[]>((resolve, reject) => {
      const keys = items.map((i) => this.opts.keyOf(i)).filter((k): k is string => k !== null);
      const weight = items.reduce((sum, i) => sum + this.opts.weightOf(i), 0);
      this.pending.push({ items, weight, keys, resolve, reject });
      this.schedule();
    });
  }

  /**
   * A batch starts one event-loop turn after a slot frees, not at once: on PGlite a statement
   * runs on this thread, so the requests that arrived meanwhile are still unread sockets when
   * the previous batch ends; starting at once made every batch a batch of one.
   */
  private schedule(): void {
    if (this.scheduled || this.inFlight >= this.opts.concurrency || this.pending.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.opts.concurrency && this.pending.length > 0) {
      const batch = this.take();
      this.inFlight++;
      void this.execute(batch).finally(() => {
        this.inFlight--;
        this.schedule();
      });
    }
  }

  private take(): Group<I, O>[] {
    const { maxItems, maxWeight } = this.opts;
    const batch: Group<I, O>[] = [];
    const rest: Group<I, O>[] = [];
    const keys = new Set<string>();
    let weight = 0;
    let count = 0;
    for (const group of this.pending) {
      const fits = batch.length === 0 || (count + group.items.length <= maxItems && weight + group.weight <= maxWeight);
      if (!fits || group.keys.some((k) => keys.has(k))) {
        rest.push(group);
        continue;
      }
      batch.push(group);
      weight += group.weight;
      count += group.items.length;
      for (const k of group.keys) keys.add(k);
    }
    this.pending = rest;
    return batch;
  }

  private async execute(batch: Group<I, O>[]): Promise<void> {
    const items = batch.flatMap((g) => g.items);
    this.opts.onBatch?.(items.length);
    try {
      const out = await this.opts.flush(items);
      let at = 0;
      for (const group of batch) {
        group.resolve(out.slice(at, at + group.items.length));
        at += group.items.length;
      }
      return;
    } catch (e) {
      if (batch.length === 1) {
        batch[0]?.reject(e);
        return;
      }
    }
    // The batch was one statement, so nothing of it was stored. Alone, each group fails or
    // succeeds on its own merits: one request the database refuses cannot fail its neighbours.
    for (const group of batch) {
      try {
        this.opts.onBatch?.(group.items.length);
        group.resolve(await this.opts.flush(group.items));
      } catch (e) {
        group.reject(e);
      }
    }
  }
}
