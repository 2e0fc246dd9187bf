import { and, asc, eq, gt } from 'drizzle-orm';
import type { Db } from '../../src/sdk/index.ts';
import { frankingReports } from './schema.ts';

export type NewReport = Omit<typeof frankingReports.$inferInsert, 'id'>;
export type StoredReport = typeof frankingReports.$inferSelect;

/** Verified abuse reports, for moderators. */
export class ReportStore {
  constructor(private readonly db: Db) {}

  /** Stores a report once per reporter and frank; returns its id (the existing one for a repeat). */
  async add(report: NewReport): Promise<number> {
    const [inserted] = await this.db.insert(frankingReports).values(report).onConflictDoNothing().returning({ id: frankingReports.id });
    if (inserted !== undefined) return inserted.id;
    const [existing] = await this.db
      .select({ id: frankingReports.id })
      .from(frankingReports)
      .where(and(eq(frankingReports.reporterUserId, report.reporterUserId), eq(frankingReports.serverFrank, report.serverFrank)));
    return existing?.id ?? -1;
  }

  /** Reports after `since` (a report id), oldest first. */
  async list(since: number, limit: number): Promise<StoredReport[]> {
    return this.db.select().from(frankingReports).where(gt(frankingReports.id, since)).orderBy(asc(frankingReports.id)).limit(limit);
  }
}
