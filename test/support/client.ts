/** Anything that answers requests: a Hono app (in process) or a real server over HTTP. */
export interface Requester {
  request(input: string, init?: RequestInit): Response | Promise<Response>;
}

export function overHttp(baseUrl: string): Requester {
  return { request: (path, init) => fetch(`${baseUrl}${path}`, init) };
}

/** A tiny Matrix client over `app.request()` for tests. */
export class TestClient {
  constructor(
    readonly app: Requester,
    readonly userId: string,
    readonly deviceId: string,
    readonly token: string,
  ) {}

  static async register(app: Requester, username: string, opts: { deviceId?: string; password?: string } = {}): Promise<TestClient> {
    const res = await app.request('/_matrix/client/v3/register', {
      method: 'POST',
      body: JSON.stringify({
        username,
        password: opts.password ?? 'correct horse',
        auth: { type: 'm.login.dummy' },
        ...(opts.deviceId === undefined ? {} : { device_id: opts.deviceId }),
      }),
    });
    const body = (await res.json()) as { user_id: string; device_id: string; access_token: string };
    if (res.status !== 200) throw new Error(`register ${username}: ${res.status} ${JSON.stringify(body)}`);
    return new TestClient(app, body.user_id, body.device_id, body.access_token);
  }

  static async login(app: Requester, user: string, opts: { deviceId?: string; password?: string } = {}): Promise<TestClient> {
    const res = await app.request('/_matrix/client/v3/login', {
      method: 'POST',
      body: JSON.stringify({
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user },
        password: opts.password ?? 'correct horse',
        ...(opts.deviceId === undefined ? {} : { device_id: opts.deviceId }),
      }),
    });
    const body = (await res.json()) as { user_id: string; device_id: string; access_token: string };
    if (res.status !== 200) throw new Error(`login ${user}: ${res.status} ${JSON.stringify(body)}`);
    return new TestClient(app, body.user_id, body.device_id, body.access_token);
  }

  async request(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> {
    return this.app.request(`/_matrix/client${path}`, {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
  }

  async json<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const res = await this.request(method, path, body);
    return { status: res.status, body: (await res.json()) as T };
  }

  private txnCounter = 0;

  async sendToDevice(type: string, messages: Record<string, Record<string, unknown>>, txnId?: string): Promise<{ status: number; body: Record<string, unknown> }> {
    const id = txnId ?? `t${Date.now()}-${this.txnCounter++}`;
    return this.json('PUT', `/v3/sendToDevice/${encodeURIComponent(type)}/${encodeURIComponent(id)}`, { messages });
  }

  async sync(opts: { since?: string | null; timeout?: number } = {}): Promise<SyncResponse> {
    const q = new URLSearchParams();
    if (opts.since != null) q.set('since', opts.since);
    if (opts.timeout !== undefined) q.set('timeout', String(opts.timeout));
    const res = await this.json<SyncResponse>('GET', `/v3/sync?${q}`);
    if (res.status !== 200) throw new Error(`sync: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body;
  }
}

export interface ToDeviceEventJson {
  sender: string;
  type: string;
  content: Record<string, unknown>;
}

export interface SyncResponse {
  next_batch: string;
  to_device: { events: ToDeviceEventJson[] };
  [key: string]: unknown;
}

/** Syncs (long-polling) until `count` events arrived or `timeoutMs` passed, then acknowledges. */
export async function collectToDevice(client: TestClient, count: number, timeoutMs = 20_000): Promise<ToDeviceEventJson[]> {
  const events: ToDeviceEventJson[] = [];
  const deadline = Date.now() + timeoutMs;
  // As a client does: a 503 (the database briefly away) is tried again after a moment.
  const sync = async (opts: { since?: string | null; timeout?: number }): Promise<SyncResponse> => {
    for (;;) {
      try {
        return await client.sync(opts);
      } catch (e) {
        if (!(e instanceof Error) || !e.message.startsWith('sync: 503') || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  };
  let since: string | null = null;
  while (events.length < count && Date.now() < deadline) {
    const s: SyncResponse = await sync({ since, timeout: since === null ? 0 : Math.min(2_000, Math.max(1, deadline - Date.now())) });
    events.push(...s.to_device.events);
    since = s.next_batch;
  }
  if (since !== null) {
    // One more sync: acknowledges the last batch and shows whether anything extra arrived.
    const s = await sync({ since, timeout: 0 });
    events.push(...s.to_device.events);
    if (s.to_device.events.length > 0) await sync({ since: s.next_batch });
  }
  return events;
}
