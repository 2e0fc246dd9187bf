import { and, asc, eq, inArray, lte, sql, type SQL } from 'drizzle-orm';
import type { Db } from './drivers/database.ts';
import { federationOutbox, federationPendingTxns } from './schema.ts';

export interface OutboxMessage {
  destination: string;
  sender: string;
  type: string;
  userId: string;
  deviceId: string;
  content: string;
}

export interface OutboxRow extends OutboxMessage {
  streamId: number;
  /** Set for an EDU of another type than m.direct_to_device: `content` is its whole content. */
  eduType?: string | null;
}

export interface PendingTxn {
  destination: string;
  txnId: string;
  body: string;
  streamIds: number[];
}

// Ids per delete statement: well inside PostgreSQL's 65,535 parameters.
const CHUNK = 5000;

/** Durable per-destination queue of to-device messages for remote users. */
export class FederationOutboxStore {
  constructor(private readonly db: Db) {}

  async destinationsWithWork(): Promise<string[]> {
    const rows = await this.db
      .select({ destination: federationOutbox.destination })
      .from(federationOutbox)
      .groupBy(federationOutbox.destination);
    const pending = await this.db.select({ destination: federationPendingTxns.destination }).from(federationPendingTxns);
    return [...new Set([...rows, ...pending].map((r) => r.destination))];
  }

  async oldestForDestination(destination: string, limit: number): Promise<OutboxRow[]> {
    return this.db
      .select({
        streamId: federationOutbox.streamId,
        destination: federationOutbox.destination,
        sender: federationOutbox.sender,
        type: federationOutbox.type,
        userId: federationOutbox.userId,
        deviceId: federationOutbox.deviceId,
        content: federationOutbox.content,
        eduType: federationOutbox.eduType,
      })
      .from(federationOutbox)
      .where(eq(federationOutbox.destination, destination))
      .orderBy(asc(federationOutbox.streamId))
      .limit(limit);
  }

  async getPendingTxn(destination: string): Promise<PendingTxn | null> {
    const rows = await this.db.select().from(federationPendingTxns).where(eq(federationPendingTxns.destination, destination));
    const row = rows[0];
    if (row === undefined) return null;
    return { destination: row.destination, txnId: row.txnId, body: row.body, streamIds: JSON.parse(row.streamIds) as number[] };
  }

  async putPendingTxn(txn: PendingTxn): Promise<void> {
    await this.db.insert(federationPendingTxns).values({
      destination: txn.destination,
      txnId: txn.txnId,
      body: txn.body,
      streamIds: JSON.stringify(txn.streamIds),
      createdTs: Date.now(),
    });
  }

  /** After the destination answered 200: the transaction and exactly the rows it carried go. */
  async completePendingTxn(txn: PendingTxn): Promise<void> {
    await this.db.transaction(async (tx) => {
      for (let i = 0; i < txn.streamIds.length; i += CHUNK) {
        await tx.delete(federationOutbox).where(inArray(federationOutbox.streamId, txn.streamIds.slice(i, i + CHUNK)));
      }
      await tx.delete(federationPendingTxns).where(eq(federationPendingTxns.destination, txn.destination));
    });
  }

  /**
   * Drops the oldest messages of each destination queued beyond `max` (a server that has been
   * unreachable for long); returns how many went. Rows of a transaction already built for it
   * may go too: that transaction is still sent as it was stored.
   */
  async trimDestinationsOver(max: number): Promise<number> {
    const over = await this.db
      .select({ destination: federationOutbox.destination, n: sql<number>`count(*)::int` })
      .from(federationOutbox)
      .groupBy(federationOutbox.destination)
      .having(sql`count(*) > ${max}`);
    let dropped = 0;
    for (const d of over) {
      // The newest of the messages to drop: everything up to it goes.
      const cutoff = await this.db
        .select({ streamId: federationOutbox.streamId })
        .from(federationOutbox)
        .where(eq(federationOutbox.destination, d.destination))
        .orderBy(asc(federationOutbox.streamId))
        .offset(Number(d.n) - max - 1)
        .limit(1);
      const upTo = cutoff[0]?.streamId;
      if (upTo === undefined) continue;
      const gone = await this.db
        .delete(federationOutbox)
        .where(and(eq(federationOutbox.destination, d.destination), lte(federationOutbox.streamId, upTo)))
        .returning({ streamId: federationOutbox.streamId });
      dropped += gone.length;
    }
    return dropped;
  }
}

/**
 * The statement that queues federation EDUs, for every writer of the outbox (to-device sends,
 * device-list updates): inserts the rows `source` selects — destination, sender, type, user id,
 * device id, content, EDU type (null for `m.direct_to_device`) — in the order it selects them,
 * which is the order they are sent in.
 */
export function outboxInsertSql(source: SQL, now: number): SQL {
  return sql`insert into federation_outbox (destination, sender, type, user_id, device_id, content, edu_type, created_ts)
          select s.x, s.s, s.t, s.u, s.d, s.c, s.e, ${now} from (${source}) as s(x, s, t, u, d, c, e)
          returning stream_id`;
}
