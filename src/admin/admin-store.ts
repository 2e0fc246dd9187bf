import { eq } from 'drizzle-orm';
import type { Db } from '../storage/drivers/database.ts';
import { users } from '../storage/schema.ts';

/** The one write the admin CLI needs that the server itself never does. */
export class AdminStore {
  constructor(private readonly db: Db) {}

  /** Replaces a user's password hash; false when there is no such user. */
  async setPasswordHash(userId: string, passwordHash: string): Promise<boolean> {
    const rows = await this.db.update(users).set({ passwordHash }).where(eq(users.userId, userId)).returning({ userId: users.userId });
    return rows.length === 1;
  }
}
