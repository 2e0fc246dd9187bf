import { asc, eq, inArray } from 'drizzle-orm';
import type { Db } from './database.ts';
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
}

export interface PendingTxn {
  destination: string;
  txnId: string;
  body: string;
  streamIds: number[];
}

const INSERT_CHUNK = 5000;

/** Durable per-destination queue of to-device messages for remote users. */
export class FederationOutboxStore {
  constructor(private readonly db: Db) {}

  async insert(messages: readonly OutboxMessage[]): Promise<void> {
    const now = Date.now();
    for (let i = 0; i < messages.length; i += INSERT_CHUNK) {
      const chunk = messages.slice(i, i + INSERT_CHUNK).map((m) => ({ ...m, createdTs: now }));
      await this.db.insert(federationOutbox).values(chunk);
    }
  }

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
      for (let i = 0; i < txn.streamIds.length; i += INSERT_CHUNK) {
        await tx.delete(federationOutbox).where(inArray(federationOutbox.streamId, txn.streamIds.slice(i, i + INSERT_CHUNK)));
      }
      await tx.delete(federationPendingTxns).where(eq(federationPendingTxns.destination, txn.destination));
    });
  }
}
