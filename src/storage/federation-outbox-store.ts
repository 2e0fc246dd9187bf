import type { Db } from './database.ts';
import { federationOutbox } from './schema.ts';

export interface OutboxMessage {
  destination: string;
  sender: string;
  type: string;
  userId: string;
  deviceId: string;
  content: string;
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
}
