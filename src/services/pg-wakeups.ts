import type postgres from 'postgres';
import type { Logger } from '../logger.ts';
import type { Notifier } from './notifier.ts';

const CHANNEL = 'to_device_wake';
// NOTIFY payloads are limited to 8000 bytes.
const MAX_PAYLOAD = 7_500;

interface WakePayload {
  from: string;
  devices: [string, string][];
}

/**
 * Wakes long-polls across processes sharing one PostgreSQL: after storing, a process NOTIFYs
 * the devices it wrote to; every process LISTENs and wakes its own waiters for them. The
 * in-process Notifier stays the fast path for the process that stored the message.
 */
export class PgWakeups {
  private listening: { unlisten(): Promise<void> } | null = null;

  constructor(
    private readonly pg: postgres.Sql,
    private readonly notifier: Notifier,
    private readonly log: Logger,
    private readonly instanceId: string,
  ) {}

  async start(): Promise<void> {
    this.listening = await this.pg.listen(CHANNEL, (payload) => this.receive(payload));
  }

  async stop(): Promise<void> {
    await this.listening?.unlisten().catch(() => {});
    this.listening = null;
  }

  publish(devices: readonly { userId: string; deviceId: string }[]): void {
    let batch: [string, string][] = [];
    let size = 0;
    const flush = () => {
      if (batch.length === 0) return;
      const payload: WakePayload = { from: this.instanceId, devices: batch };
      this.pg.notify(CHANNEL, JSON.stringify(payload)).catch((e: unknown) => this.log.warn('NOTIFY failed', { err: String(e) }));
      batch = [];
      size = 0;
    };
    for (const d of devices) {
      const entry: [string, string] = [d.userId, d.deviceId];
      const bytes = Buffer.byteLength(JSON.stringify(entry)) + 1;
      if (size + bytes > MAX_PAYLOAD) flush();
      batch.push(entry);
      size += bytes;
    }
    flush();
  }

  private receive(payload: string): void {
    let parsed: WakePayload;
    try {
      parsed = JSON.parse(payload) as WakePayload;
    } catch {
      return;
    }
    if (parsed.from === this.instanceId) return;
    for (const [userId, deviceId] of parsed.devices) this.notifier.notify(userId, deviceId);
  }
}
