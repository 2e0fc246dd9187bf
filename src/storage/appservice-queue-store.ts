import { asc, eq, inArray } from 'drizzle-orm';
import type { Db } from './database.ts';
import { appservicePendingTxns, appserviceQueue, deviceInbox } from './schema.ts';

export interface AppserviceMessage {
  appserviceId: string;
  inboxStreamId: number | null;
  exclusive: boolean;
  type: string;
  sender: string;
  content: string;
  toUserId: string;
  toDeviceId: string;
}

export interface QueuedAppserviceMessage extends AppserviceMessage {
  streamId: number;
}

export interface AppservicePendingTxn {
  appserviceId: string;
  txnId: string;
  body: string;
  queueIds: number[];
  inboxIds: number[];
}

const CHUNK = 5000;

/** Durable per-appservice queues of to-device messages (MSC4203). */
export class AppserviceQueueStore {
  constructor(private readonly db: Db) {}

  async insert(messages: readonly AppserviceMessage[]): Promise<void> {
    const now = Date.now();
    for (let i = 0; i < messages.length; i += CHUNK) {
      await this.db.insert(appserviceQueue).values(messages.slice(i, i + CHUNK).map((m) => ({ ...m, createdTs: now })));
    }
  }

  async appservicesWithWork(): Promise<string[]> {
    const queued = await this.db.selectDistinct({ id: appserviceQueue.appserviceId }).from(appserviceQueue);
    const pending = await this.db.select({ id: appservicePendingTxns.appserviceId }).from(appservicePendingTxns);
    return [...new Set([...queued, ...pending].map((r) => r.id))];
  }

  async oldest(appserviceId: string, limit: number): Promise<QueuedAppserviceMessage[]> {
    return this.db
      .select()
      .from(appserviceQueue)
      .where(eq(appserviceQueue.appserviceId, appserviceId))
      .orderBy(asc(appserviceQueue.streamId))
      .limit(limit)
      .then((rows) => rows.map(({ createdTs: _c, ...r }) => r));
  }

  async getPendingTxn(appserviceId: string): Promise<AppservicePendingTxn | null> {
    const rows = await this.db.select().from(appservicePendingTxns).where(eq(appservicePendingTxns.appserviceId, appserviceId));
    const row = rows[0];
    if (row === undefined) return null;
    return {
      appserviceId,
      txnId: row.txnId,
      body: row.body,
      queueIds: JSON.parse(row.queueIds) as number[],
      inboxIds: JSON.parse(row.inboxIds) as number[],
    };
  }

  async putPendingTxn(txn: AppservicePendingTxn): Promise<void> {
    await this.db.insert(appservicePendingTxns).values({
      appserviceId: txn.appserviceId,
      txnId: txn.txnId,
      body: txn.body,
      queueIds: JSON.stringify(txn.queueIds),
      inboxIds: JSON.stringify(txn.inboxIds),
      createdTs: Date.now(),
    });
  }

  /** After the appservice's 2xx: its rows, the exclusive ones' inbox rows, and the txn go. */
  async completePendingTxn(txn: AppservicePendingTxn): Promise<void> {
    await this.db.transaction(async (tx) => {
      for (let i = 0; i < txn.queueIds.length; i += CHUNK) {
        await tx.delete(appserviceQueue).where(inArray(appserviceQueue.streamId, txn.queueIds.slice(i, i + CHUNK)));
      }
      for (let i = 0; i < txn.inboxIds.length; i += CHUNK) {
        await tx.delete(deviceInbox).where(inArray(deviceInbox.streamId, txn.inboxIds.slice(i, i + CHUNK)));
      }
      await tx.delete(appservicePendingTxns).where(eq(appservicePendingTxns.appserviceId, txn.appserviceId));
    });
  }
}
