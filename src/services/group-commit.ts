/**
 * Group commit: callers hand in one item each; items that arrive while a batch is in the
 * database go together in the next batch, as one statement. Under load this turns N round trips
 * (and N takes of the same row locks) into one; an idle caller waits for nobody, because a batch
 * starts as soon as a slot is free.
 */
export interface GroupCommitOptions<I, O> {
  /** Runs one batch; answers one result per item, in the items' order. */
  flush: (items: readonly I[]) => Promise<O[]>;
  /** Batches in flight at once. */
  concurrency: number;
  /** Most items in one batch. */
  maxItems: number;
  /** Most total weight in one batch (an item heavier than this still goes, alone). */
  maxWeight: number;
  weightOf: (item: I) => number;
  /**
   * Items with the same non-null key never share a batch: the second waits for a later one, so
   * a batch can tell which of them was first (the same txn id sent twice at once).
   */
  keyOf: (item: I) => string | null;
}

interface Entry<I, O> {
  item: I;
  resolve: (o: O) => void;
  reject: (e: unknown) => void;
}

export class GroupCommit<I, O> {
  private pending: Entry<I, O>[] = [];
  private inFlight = 0;

  constructor(private readonly opts: GroupCommitOptions<I, O>) {}

  run(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.pending.push({ item, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.opts.concurrency && this.pending.length > 0) {
      const batch = this.take();
      this.inFlight++;
      void this.execute(batch).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private take(): Entry<I, O>[] {
    const { maxItems, maxWeight, weightOf, keyOf } = this.opts;
    const batch: Entry<I, O>[] = [];
    const rest: Entry<I, O>[] = [];
    const keys = new Set<string>();
    let weight = 0;
    for (const entry of this.pending) {
      const w = weightOf(entry.item);
      const key = keyOf(entry.item);
      const fits = batch.length === 0 || (batch.length < maxItems && weight + w <= maxWeight);
      if (!fits || (key !== null && keys.has(key))) {
        rest.push(entry);
        continue;
      }
      batch.push(entry);
      weight += w;
      if (key !== null) keys.add(key);
    }
    this.pending = rest;
    return batch;
  }

  private async execute(batch: Entry<I, O>[]): Promise<void> {
    try {
      const out = await this.opts.flush(batch.map((e) => e.item));
      batch.forEach((e, i) => e.resolve(out[i] as O));
      return;
    } catch (e) {
      if (batch.length === 1) {
        batch[0]?.reject(e);
        return;
      }
    }
    // The batch was one statement, so nothing of it was stored. Alone, each item fails or
    // succeeds on its own merits: one request the database refuses cannot fail its neighbours.
    for (const entry of batch) {
      try {
        const out = await this.opts.flush([entry.item]);
        entry.resolve(out[0] as O);
      } catch (e) {
        entry.reject(e);
      }
    }
  }
}
