import { and, eq } from 'drizzle-orm';
import type { Db } from './drivers/database.ts';
import { filters } from './schema.ts';

/** Sync filters uploaded by clients; accepted and returned, not applied to to-device. */
export class FilterStore {
  constructor(private readonly db: Db) {}

  async create(userId: string, filterJson: string): Promise<string> {
    const rows = await this.db.insert(filters).values({ userId, filterJson }).returning({ id: filters.filterId });
    return String(rows[0]?.id);
  }

  async get(userId: string, filterId: string): Promise<string | null> {
    if (!/^\d{1,15}$/.test(filterId)) return null;
    const rows = await this.db
      .select({ json: filters.filterJson })
      .from(filters)
      .where(and(eq(filters.userId, userId), eq(filters.filterId, Number(filterId))));
    return rows[0]?.json ?? null;
  }
}
