import type { Hono } from 'hono';
import type { AppEnv } from '../../src/rest/env.ts';

/** A tiny Matrix client over `app.request()` for tests. */
export class TestClient {
  constructor(
    readonly app: Hono<AppEnv>,
    readonly userId: string,
    readonly deviceId: string,
    readonly token: string,
  ) {}

  static async register(app: Hono<AppEnv>, username: string, opts: { deviceId?: string; password?: string } = {}): Promise<TestClient> {
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

  static async login(app: Hono<AppEnv>, user: string, opts: { deviceId?: string; password?: string } = {}): Promise<TestClient> {
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
