import { lt, sql, type SQL } from 'drizzle-orm';
import { queryRows } from '../shared/query-rows.ts';
import type { Db } from './drivers/database.ts';
import { federationInboundMessages } from './schema.ts';

/** Which (origin, message_id) EDUs were already applied. */
export class FederationInboundStore {
  constructor(private readonly db: Db) {}

  /** Inside the transaction that stores the EDU's messages; false when already applied. */
  async claim(origin: string, messageId: string): Promise<boolean> {
    const rows = await queryRows(this.db, inboundClaimSql(sql`select ${origin}::text, ${messageId}::text`, Date.now()));
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

/**
 * The statement that claims EDUs, for the send statement and {@link FederationInboundStore.claim}:
 * inserts the (origin, message_id) rows `source` selects that are not there yet, returning those
 * it inserted.
 */
export function inboundClaimSql(source: SQL, now: number): SQL {
  return sql`insert into federation_inbound_messages (origin, message_id, received_ts)
          select s.o, s.m, ${now} from (${source}) as s(o, m)
          on conflict do nothing
          returning origin, message_id`;
}
