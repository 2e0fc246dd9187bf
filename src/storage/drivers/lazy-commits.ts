import { sql } from 'drizzle-orm';
import type { Db } from './database.ts';
import { queryRows } from '../../shared/query-rows.ts';

/**
 * Commits made without waiting for their WAL flush (`synchronous_commit` off for that
 * transaction), and when they are known to be on disk. A send to the server user alone stores
 * nothing but its txn claim; answering it waits for the handler, whose reply is a commit that
 * waits for its flush. The WAL is one sequence, so flushing the reply's commit flushes the claim
 * before it: waiting for both flushes spent one fsync of each ping for nothing.
 *
 * The rule: a lazy commit is on disk once a commit that waited for its flush *began after the
 * lazy one had returned* has succeeded (its commit record comes later in the WAL, on PostgreSQL
 * whichever connection made it). Before answering, `makeDurable` checks that for the statements
 * it was told of and otherwise makes such a commit itself. Nothing acknowledged is lost; a
 * crash before the answer can lose the claim, but then also everything written after it, the
 * handler's own rows and replies included, and the sender retries a request it never saw
 * answered.
 */
export class LazyCommits {
  private started = 0;
  /** The highest `started` value of a flushed commit that has succeeded. */
  private flushedFrom = 0;
  private flushing: { from: number; done: Promise<void> } | null = null;

  constructor(
    private readonly db: Db,
    /** Called each time `makeDurable` had to flush itself (for the metric). */
    private readonly onFlush: () => void = () => {},
  ) {}

  /**
   * Call just before sending a statement that commits waiting for its flush; call what it
   * returns once that statement has succeeded.
   */
  flushedCommit(): () => void {
    const seq = ++this.started;
    return () => {
      if (seq > this.flushedFrom) this.flushedFrom = seq;
    };
  }

  /** Call when a lazy commit has returned: what to pass to `makeDurable` later. */
  mark(): number {
    return this.started;
  }

  /** Resolves once everything committed before `mark` was taken is on disk. */
  async makeDurable(mark: number): Promise<void> {
    if (this.flushedFrom > mark) return;
    if (this.flushing !== null && this.flushing.from > mark) return this.flushing.done;
    const done = this.flushedCommit();
    const from = this.started;
    const flush = (async () => {
      // The smallest commit that waits for its flush: a transaction whose only WAL record is its
      // commit record does not wait (PostgreSQL's RecordTransactionCommit), a transactional
      // logical-decoding message makes it write one first. Any role may call this.
      await queryRows(this.db, sql`select pg_logical_emit_message(true, 'tds.flush', '') as lsn`);
      done();
      this.onFlush();
    })();
    this.flushing = { from, done: flush };
    try {
      await flush;
    } finally {
      if (this.flushing?.done === flush) this.flushing = null;
    }
  }
}
