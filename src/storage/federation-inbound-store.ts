import { lt } from 'drizzle-orm';
import type { Db } from './database.ts';
import { federationInboundMessages } from './schema.ts';

/** Which (origin, message_id) EDUs were already applied. */
export class FederationInboundStore {
  constructor(private readonly db: Db) {}

  /** Inside the transaction that stores the EDU's messages; false when already applied. */
  async claim(origin: string, messageId: string): Promise<boolean> {
    const rows = await this.db
      .insert(federationInboundMessages)
      .values({ origin, messageId, receivedTs: Date.now() })
      .onConflictDoNothing()
      .returning({ messageId: federationInboundMessages.messageId });
    return rows.length === 1;
  }

  async deleteOlderThan(ts: number): Promise<number> {
    const rows = await this.db
      .delete(federationInboundMessages)
      .where(lt(federationInboundMessages.receivedTs, ts))
      .returning({ messageId: federationInboundMessages.messageId });
    return rows.length;
  }
}
