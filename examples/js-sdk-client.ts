/**
 * A stock matrix-js-sdk client (no crypto) talking to the server user (MSC4246).
 *
 *   npm run example:js-sdk                     # against http://127.0.0.1:8008
 *
 * Signs in, starts the client's sync loop, sends `org.example.ping` to `@:<server_name>` with
 * client.sendToDevice, and waits for the `org.example.pong` to arrive as a ClientEvent.ToDeviceEvent.
 */
import { ClientEvent, createClient, type MatrixEvent, SyncState } from 'matrix-js-sdk';
import { logger, type Logger } from 'matrix-js-sdk/lib/logger.js';

// The SDK logs every request; keep the example's output to its result. Its global logger is a
// loglevel instance at run time, though typed without setLevel.
(logger as unknown as { setLevel(level: string): void }).setLevel('silent');
// matrix-js-sdk 43 calls Promise.withResolvers (Node 22+) when it recovers from a failed /sync;
// without it, one failed request on Node 20 silently ends the sync loop.
const withResolvers = <T>() => {
  let resolve!: (value: T | PromiseLike<T>) => void;
  let reject!: (reason?: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
};
(Promise as unknown as { withResolvers?: typeof withResolvers }).withResolvers ??= withResolvers;

const quiet: Logger = {
  trace: () => {},
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  getChild: () => quiet,
};

const homeserver = (process.env.HOMESERVER ?? 'http://127.0.0.1:8008').replace(/\/$/, '');
const username = process.env.USERNAME ?? 'js-sdk-example';
const password = process.env.PASSWORD ?? 'js-sdk-example-password';

interface Credentials {
  user_id: string;
  access_token: string;
  device_id: string;
}

async function signIn(): Promise<Credentials> {
  const anon = createClient({ baseUrl: homeserver, logger: quiet });
  try {
    return (await anon.registerRequest({ username, password, auth: { type: 'm.login.dummy' } })) as Credentials;
  } catch (e) {
    const errcode = (e as { errcode?: string }).errcode;
    if (errcode !== 'M_USER_IN_USE' && errcode !== 'M_FORBIDDEN') throw e;
  }
  return (await anon.loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: username }, password })) as Credentials;
}

async function main(): Promise<void> {
  const creds = await signIn();
  const serverUser = `@:${creds.user_id.slice(creds.user_id.indexOf(':') + 1)}`;
  const client = createClient({
    baseUrl: homeserver,
    accessToken: creds.access_token,
    userId: creds.user_id,
    deviceId: creds.device_id,
    logger: quiet,
  });

  const nonce = `js-sdk-${Date.now()}`;
  const pong = new Promise<MatrixEvent>((resolve) => {
    client.on(ClientEvent.ToDeviceEvent, (event: MatrixEvent) => {
      if (event.getType() === 'org.example.pong' && event.getSender() === serverUser && event.getContent().nonce === nonce) resolve(event);
    });
  });
  const ready = new Promise<void>((resolve) => {
    client.on(ClientEvent.Sync, (state: SyncState) => {
      if (state === SyncState.Prepared || state === SyncState.Syncing) resolve();
    });
  });
  await client.startClient({ initialSyncLimit: 1 });
  await ready;

  const started = performance.now();
  await client.sendToDevice('org.example.ping', new Map([[serverUser, new Map([['', { nonce }]])]]));
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no pong within 30 s')), 30_000).unref());
  const event = await Promise.race([pong, timeout]);
  console.log(
    `ToDeviceEvent ${event.getType()} from ${event.getSender()} nonce=${String(event.getContent().nonce)} after ${(performance.now() - started).toFixed(1)} ms`,
  );
  client.stopClient();
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  },
);
