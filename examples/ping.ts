/**
 * Pings the server user (MSC4246) and prints the round trip.
 *
 *   npm run example:ping                       # against http://127.0.0.1:8008
 *   HOMESERVER=http://host:port COUNT=5 npm run example:ping
 *
 * Registers the user (or logs in if it exists), sends `org.example.ping {nonce}` to
 * `@:<server_name>` device "", long-polls /sync until the matching `org.example.pong` arrives.
 */
const homeserver = (process.env.HOMESERVER ?? 'http://127.0.0.1:8008').replace(/\/$/, '');
const username = process.env.USERNAME ?? 'ping-example';
const password = process.env.PASSWORD ?? 'ping-example-password';
const count = Number(process.env.COUNT ?? 3);

interface Session {
  userId: string;
  accessToken: string;
}

async function call(method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${homeserver}/_matrix/client${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

async function signIn(): Promise<Session> {
  const reg = await call('POST', '/v3/register', { username, password, auth: { type: 'm.login.dummy' } });
  if (reg.status === 200) return { userId: String(reg.json.user_id), accessToken: String(reg.json.access_token) };
  if (reg.json.errcode !== 'M_USER_IN_USE' && reg.json.errcode !== 'M_FORBIDDEN') {
    throw new Error(`register failed: ${reg.status} ${JSON.stringify(reg.json)}`);
  }
  const login = await call('POST', '/v3/login', { type: 'm.login.password', identifier: { type: 'm.id.user', user: username }, password });
  if (login.status !== 200) throw new Error(`login failed: ${login.status} ${JSON.stringify(login.json)}`);
  return { userId: String(login.json.user_id), accessToken: String(login.json.access_token) };
}

async function main(): Promise<void> {
  const session = await signIn();
  const serverName = session.userId.slice(session.userId.indexOf(':') + 1);
  const serverUser = `@:${serverName}`;
  console.log(`signed in as ${session.userId}; pinging ${serverUser}`);

  let since = String((await call('GET', '/v3/sync', undefined, session.accessToken)).json.next_batch);
  for (let i = 0; i < count; i++) {
    const nonce = `${Date.now()}-${i}`;
    const started = performance.now();
    const sent = await call('PUT', `/v3/sendToDevice/org.example.ping/${nonce}`, { messages: { [serverUser]: { '': { nonce } } } }, session.accessToken);
    if (sent.status !== 200) throw new Error(`sendToDevice failed: ${sent.status} ${JSON.stringify(sent.json)}`);
    let pong: Record<string, unknown> | undefined;
    while (pong === undefined) {
      const sync = await call('GET', `/v3/sync?since=${encodeURIComponent(since)}&timeout=10000`, undefined, session.accessToken);
      if (sync.status !== 200) throw new Error(`sync failed: ${sync.status} ${JSON.stringify(sync.json)}`);
      since = String(sync.json.next_batch);
      const events = (sync.json.to_device as { events: { sender: string; type: string; content: Record<string, unknown> }[] }).events;
      pong = events.find((e) => e.type === 'org.example.pong' && e.sender === serverUser && e.content.nonce === nonce)?.content;
      if (events.length === 0 && performance.now() - started > 30_000) throw new Error('no pong within 30 s');
    }
    const rtt = performance.now() - started;
    console.log(`pong nonce=${String(pong.nonce)} server_ts=${String(pong.server_ts)} round trip ${rtt.toFixed(1)} ms`);
  }
  // Acknowledge the last batch so the queue is left empty.
  await call('GET', `/v3/sync?since=${encodeURIComponent(since)}`, undefined, session.accessToken);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
