import type { TestClient, ToDeviceEventJson } from './client.ts';

/**
 * A device's to-device queue read in steps: each `take()` acknowledges what the previous one
 * returned and gives what arrived since. Handler replies are queued before `sendToDevice`
 * returns, so no long-poll is needed to see them.
 */
export class Inbox {
  private since: string | null = null;

  constructor(readonly client: TestClient) {}

  async take(): Promise<ToDeviceEventJson[]> {
    const s = await this.client.sync({ since: this.since });
    this.since = s.next_batch;
    return s.to_device.events;
  }

  /** The events of one type among those that arrived since the last take. */
  async ofType(type: string): Promise<ToDeviceEventJson[]> {
    return (await this.take()).filter((e) => e.type === type);
  }
}
