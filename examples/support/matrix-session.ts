/**
 * A minimal Matrix client for the examples: sign in, send to-device messages (to the server
 * user or to another device), and wait for to-device events by long-polling /sync.
 */
export interface ToDeviceEvent {
  sender: string;
  type: string;
  content: Record<string, unknown>;
}

export class MatrixSession {
  private since: string | null = null;
  private readonly pending: ToDeviceEvent[] = [];
  private txn = 0;

  private constructor(
    private readonly homeserver: string,
    readonly userId: string,
    readonly deviceId: string,
    private readonly token: string,
  ) {}

  /** `@:<server_name>`, the server user (MSC4246). */
  get serverUser(): string {
    return `@:${this.userId.slice(this.userId.indexOf(':') + 1)}`;
  }

  /** Registers the user, or logs in (as a new device) when it exists already. */
  static async signIn(homeserver: string, username: string, password: string): Promise<MatrixSession> {
    const base = homeserver.replace(/\/$/, '');
    const reg = await call(base, 'POST', '/v3/register', { username, password, auth: { type: 'm.login.dummy' } });
    let body = reg.json;
    if (reg.status !== 200) {
      if (reg.json.errcode !== 'M_USER_IN_USE') throw new Error(`register ${username}: ${reg.status} ${JSON.stringify(reg.json)}`);
      const login = await call(base, 'POST', '/v3/login', { type: 'm.login.password', identifier: { type: 'm.id.user', user: username }, password });
      if (login.status !== 200) throw new Error(`login ${username}: ${login.status} ${JSON.stringify(login.json)}`);
      body = login.json;
    }
    const session = new MatrixSession(base, String(body.user_id), String(body.device_id), String(body.access_token));
    // Start from an empty queue: anything older belongs to an earlier run.
    await session.sync(0);
    session.pending.length = 0;
    return session;
  }

  async toServer(type: string, content: Record<string, unknown>): Promise<void> {
    await this.send(this.serverUser, '', type, content);
  }

  async send(userId: string, deviceId: string, type: string, content: Record<string, unknown>): Promise<void> {
    const txnId = `${Date.now()}-${this.txn++}`;
    const res = await call(this.homeserver, 'PUT', `/v3/sendToDevice/${encodeURIComponent(type)}/${txnId}`, { messages: { [userId]: { [deviceId]: content } } }, this.token);
    if (res.status !== 200) throw new Error(`sendToDevice ${type}: ${res.status} ${JSON.stringify(res.json)}`);
  }

  /** A client-API request with this session's access token (path after `/_matrix/client`). */
  async request(method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
    return call(this.homeserver, method, path, body, this.token);
  }

  /** The first event (already received, or arriving within `timeoutMs`) that matches. */
  async next(match: (e: ToDeviceEvent) => boolean, timeoutMs = 15_000): Promise<ToDeviceEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.pending.findIndex(match);
      if (i >= 0) return this.pending.splice(i, 1)[0] as ToDeviceEvent;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.userId}: no matching to-device event within ${timeoutMs} ms`);
      await this.sync(Math.min(left, 5_000));
    }
  }

  /** The next event of a type from the server user. */
  nextOfType(type: string, timeoutMs?: number): Promise<ToDeviceEvent> {
    return this.next((e) => e.type === type && e.sender === this.serverUser, timeoutMs);
  }

  /** Everything queued right now, without waiting. */
  async drain(): Promise<ToDeviceEvent[]> {
    await this.sync(0);
    return this.pending.splice(0);
  }

  /** Acknowledges what was received and deletes this device (and its queue) on the server. */
  async logout(): Promise<void> {
    await this.sync(0);
    await call(this.homeserver, 'POST', '/v3/logout', {}, this.token);
  }

  private async sync(timeoutMs: number): Promise<void> {
    const q = new URLSearchParams({ timeout: String(timeoutMs) });
    if (this.since !== null) q.set('since', this.since);
    const res = await call(this.homeserver, 'GET', `/v3/sync?${q}`, undefined, this.token);
    if (res.status !== 200) throw new Error(`sync: ${res.status} ${JSON.stringify(res.json)}`);
    this.since = String(res.json.next_batch);
    this.pending.push(...((res.json.to_device as { events?: ToDeviceEvent[] } | undefined)?.events ?? []));
  }
}

async function call(base: string, method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${base}/_matrix/client${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}
