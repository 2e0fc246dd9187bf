import type postgres from 'postgres';
import type { Logger } from '../logger.ts';
import type { Notifier } from './notifier.ts';

/** The one channel of cross-process events; the send statement NOTIFYs on it too (see SendStatement). */
export const WAKE_CHANNEL = 'to_device_wake';
const CHANNEL = WAKE_CHANNEL;
// NOTIFY payloads are limited to 8000 bytes.
const MAX_PAYLOAD = 7_500;
/** Timings of {@link PgWakeups}; tests shorten them. */
export interface WakeupTiming {
  /** How often a process checks that it still hears its own NOTIFYs (which also tell other processes it is alive). */
  probeMs: number;
  /** How long another process counts as alive after its last NOTIFY. */
  peerTtlMs: number;
  /** How long a new process assumes others exist: they answer its first NOTIFY at once, so a few round trips. */
  startupMs: number;
  /** After first hearing of another process: when local long-polls re-read their queues (see {@link PgWakeups.othersMayListen}). */
  recheckMs: number;
}

export const DEFAULT_WAKEUP_TIMING: WakeupTiming = { probeMs: 10_000, peerTtlMs: 25_000, startupMs: 3_000, recheckMs: 1_000 };

interface WakePayload {
  from: string;
  devices?: [string, string][];
  /** Hashes of access tokens revoked on the sending process (logout, device deletion). */
  revoked?: string[];
  /** The device-list stream position the sender wrote; read before `devices` are woken. */
  dl?: number;
  /** Devices whose one-time or fallback key counts changed (upload, claim). */
  keys?: [string, string][];
  /** A process's check that its own LISTEN still works. */
  probe?: number;
  /** A process saying it exists: when it starts, and in answer to a process it had not heard before. */
  hello?: true;
}

/**
 * Cross-process events through PostgreSQL NOTIFY: which devices got messages (so every process
 * wakes its own long-polls) and which access tokens were revoked (so every process drops them
 * from its token cache). Events of one tick are coalesced into as few NOTIFYs as fit.
 */
export class PgWakeups {
  private listening: { unlisten(): Promise<void> } | null = null;
  private pendingDevices: [string, string][] = [];
  private pendingRevoked: string[] = [];
  private pendingKeys: [string, string][] = [];
  private pendingPosition: number | null = null;
  private flushScheduled = false;
  private probeTimer: NodeJS.Timeout | null = null;
  private probeSent = 0;
  private probeHeard = 0;
  private startedAt = 0;
  /** Other processes on this channel: instance id → when last heard (any NOTIFY of theirs). */
  private readonly peers = new Map<string, number>();
  private recheck: NodeJS.Timeout | null = null;
  onRevoked: (tokenHashes: string[]) => void = () => {};
  onDeviceListPosition: (position: number) => void = () => {};
  onKeyCountsChanged: (devices: { userId: string; deviceId: string }[]) => void = () => {};
  /**
   * Another process was heard for the first time: sends made before the two knew of each other
   * may have skipped their NOTIFY (see othersMayListen). Called `recheckMs` later; the app wakes
   * the local long-polls whose devices have messages queued.
   */
  onNewPeer: () => void = () => {};
  /** Notifications may have been missed (LISTEN was re-established): drop what other processes would have said. */
  onMissedNotifications: () => void = () => {};

  constructor(
    private readonly pg: postgres.Sql,
    private readonly notifier: Notifier,
    private readonly log: Logger,
    private readonly instanceId: string,
    /** Where LISTEN runs: a direct connection, since a transaction pooler drops notifications. */
    private readonly listener: postgres.Sql = pg,
    private readonly timing: WakeupTiming = DEFAULT_WAKEUP_TIMING,
  ) {}

  async start(): Promise<void> {
    await this.listen();
    this.startedAt = Date.now();
    // At once: the processes already running learn that this one exists.
    this.announce();
    this.probeTimer = setInterval(() => void this.probe(), this.timing.probeMs);
    this.probeTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.probeTimer !== null) clearInterval(this.probeTimer);
    this.probeTimer = null;
    if (this.recheck !== null) clearTimeout(this.recheck);
    this.recheck = null;
    await this.listening?.unlisten().catch(() => {});
    this.listening = null;
  }

  /**
   * postgres.js issues LISTEN again after its connection drops (a restart, a failover) and then
   * calls `onlisten`: whatever was notified in between is lost, so every local long-poll is
   * woken to read its queue and what other processes would have announced is forgotten.
   */
  private async listen(): Promise<void> {
    let first = true;
    this.listening = await this.listener.listen(
      CHANNEL,
      (payload) => this.receive(payload),
      () => {
        if (first) {
          first = false;
          return;
        }
        this.log.info('LISTEN re-established; waking long-polls and dropping cross-process caches');
        this.resync();
      },
    );
  }

  private resync(): void {
    this.notifier.wakeWaiting();
    this.onMissedNotifications();
  }

  /**
   * postgres.js gives up silently when its re-LISTEN fails (e.g. it reconnected before the
   * standby was promoted). A NOTIFY to itself that never arrives shows it; LISTEN again.
   */
  private async probe(): Promise<void> {
    this.forgetSilentPeers();
    if (this.probeSent > this.probeHeard) {
      this.log.warn('own NOTIFY not received; issuing LISTEN again');
      this.probeHeard = this.probeSent;
      try {
        await this.listening?.unlisten().catch(() => {});
        await this.listen();
        this.resync();
      } catch (e) {
        this.log.warn('LISTEN failed', { err: String(e) });
        return;
      }
    }
    const n = this.probeSent + 1;
    try {
      await this.pg.notify(CHANNEL, JSON.stringify({ from: this.instanceId, probe: n } satisfies WakePayload));
      this.probeSent = n;
    } catch {
      // The database is away; the next round tries again.
    }
  }

  /**
   * Whether a send's wake-up NOTIFY can reach anyone: another process was heard within
   * `peerTtlMs` (every process probes every `probeMs`), or this one started less than
   * `startupMs` ago and may not have heard the others yet (a new process says hello at once and
   * every other answers at once). A process alone on its database skips the NOTIFY of every
   * send (a round of signals, and a read in every listening session).
   *
   * Until two processes have heard each other, one's sends may skip the NOTIFY that would have
   * woken a long-poll parked on the other. So whenever a process first hears another, `recheckMs`
   * later (when the sends made before either knew have committed) it wakes the local long-polls
   * whose devices have messages queued ({@link onNewPeer}): such a message arrives that much
   * late, never lost.
   */
  othersMayListen(): boolean {
    const now = Date.now();
    if (now - this.startedAt < this.timing.startupMs) return true;
    for (const heard of this.peers.values()) if (now - heard < this.timing.peerTtlMs) return true;
    return false;
  }

  /** Forgets processes not heard for `peerTtlMs` (each restart is a new id; the map must not grow with them). */
  private forgetSilentPeers(): void {
    const now = Date.now();
    for (const [id, heard] of this.peers) if (now - heard >= this.timing.peerTtlMs) this.peers.delete(id);
  }

  publish(devices: readonly { userId: string; deviceId: string }[]): void {
    for (const d of devices) this.pendingDevices.push([d.userId, d.deviceId]);
    this.scheduleFlush();
  }

  /** A device-list change at `position`: other processes learn the position, then wake `devices`. */
  publishDeviceLists(position: number, devices: readonly { userId: string; deviceId: string }[]): void {
    this.pendingPosition = Math.max(this.pendingPosition ?? 0, position);
    this.publish(devices);
  }

  publishKeyCountsChanged(devices: readonly { userId: string; deviceId: string }[]): void {
    for (const d of devices) this.pendingKeys.push([d.userId, d.deviceId]);
    this.scheduleFlush();
  }

  publishRevoked(tokenHashes: readonly string[]): void {
    this.pendingRevoked.push(...tokenHashes);
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    const send = (payload: WakePayload) =>
      this.pg.notify(CHANNEL, JSON.stringify(payload)).catch((e: unknown) => this.log.warn('NOTIFY failed', { err: String(e) }));
    // 150 hashes of 43 characters stay well under the payload limit.
    for (let i = 0; i < this.pendingRevoked.length; i += 150) {
      send({ from: this.instanceId, revoked: this.pendingRevoked.slice(i, i + 150) });
    }
    this.pendingRevoked = [];
    // 100 pairs of user and device IDs (each at most 255 bytes) stay under the payload limit.
    for (let i = 0; i < this.pendingKeys.length; i += 100) send({ from: this.instanceId, keys: this.pendingKeys.slice(i, i + 100) });
    this.pendingKeys = [];
    // Each payload that wakes devices carries the position: whichever arrives first, the woken
    // poll's process already knows there is something to read.
    const position = this.pendingPosition;
    this.pendingPosition = null;
    const withPosition = (payload: WakePayload): WakePayload => (position === null ? payload : { ...payload, dl: position });
    if (position !== null && this.pendingDevices.length === 0) send(withPosition({ from: this.instanceId }));
    let batch: [string, string][] = [];
    let size = 0;
    for (const entry of new Map(this.pendingDevices.map((d) => [`${d[0]}\u0000${d[1]}`, d])).values()) {
      const bytes = Buffer.byteLength(JSON.stringify(entry)) + 1;
      if (size + bytes > MAX_PAYLOAD && batch.length > 0) {
        send(withPosition({ from: this.instanceId, devices: batch }));
        batch = [];
        size = 0;
      }
      batch.push(entry);
      size += bytes;
    }
    if (batch.length > 0) send(withPosition({ from: this.instanceId, devices: batch }));
    this.pendingDevices = [];
  }

  private receive(payload: string): void {
    let parsed: WakePayload;
    try {
      parsed = JSON.parse(payload) as WakePayload;
    } catch {
      return;
    }
    if (parsed.from === this.instanceId) {
      if (typeof parsed.probe === 'number') this.probeHeard = Math.max(this.probeHeard, parsed.probe);
      return;
    }
    if (typeof parsed.from === 'string') this.heardFrom(parsed.from);
    if (typeof parsed.dl === 'number') this.onDeviceListPosition(parsed.dl);
    if (parsed.keys !== undefined && parsed.keys.length > 0) this.onKeyCountsChanged(parsed.keys.map(([userId, deviceId]) => ({ userId, deviceId })));
    for (const [userId, deviceId] of parsed.devices ?? []) {
      // `*` (from the send statement): every device of the user that waits here.
      if (deviceId === '*') for (const d of [...this.notifier.waitingDevices(userId)]) this.notifier.notify(userId, d);
      else this.notifier.notify(userId, deviceId);
    }
    if (parsed.revoked !== undefined && parsed.revoked.length > 0) this.onRevoked(parsed.revoked);
  }

  private announce(): void {
    this.pg.notify(CHANNEL, JSON.stringify({ from: this.instanceId, hello: true } satisfies WakePayload)).catch(() => {
      // The database is away: the probes that follow say the same.
    });
  }

  /** A NOTIFY of another process; a process not heard before is answered and, see {@link othersMayListen}, caught up with. */
  private heardFrom(peer: string): void {
    const known = this.peers.has(peer);
    this.peers.set(peer, Date.now());
    if (known) return;
    this.announce();
    if (this.recheck !== null) return;
    this.recheck = setTimeout(() => {
      this.recheck = null;
      this.onNewPeer();
    }, this.timing.recheckMs);
    this.recheck.unref();
  }
}
