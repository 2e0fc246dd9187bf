import { and, eq, lt } from 'drizzle-orm';
import type { Db } from './drivers/database.ts';
import { uiaSessions } from './schema.ts';

/** User-interactive-auth sessions; persisted so any process can complete a flow. */
export class UiaStore {
  constructor(private readonly db: Db) {}

  async create(sessionId: string, userId: string | null): Promise<void> {
    await this.db.insert(uiaSessions).values({ sessionId, userId, createdTs: Date.now() });
  }

  async exists(sessionId: string, userId: string | null, notBefore: number): Promise<boolean> {
    const rows = await this.db
      .select({ id: uiaSessions.sessionId, userId: uiaSessions.userId, createdTs: uiaSessions.createdTs })
      .from(uiaSessions)
      .where(eq(uiaSessions.sessionId, sessionId));
    const row = rows[0];
    return row !== undefined && row.userId === userId && row.createdTs >= notBefore;
  }

  async delete(sessionId: string): Promise<void> {
    await this.db.delete(uiaSessions).where(eq(uiaSessions.sessionId, sessionId));
  }

  async deleteOlderThan(ts: number): Promise<void> {
    await this.db.delete(uiaSessions).where(and(lt(uiaSessions.createdTs, ts)));
  }
}
