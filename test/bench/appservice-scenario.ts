/**
 * S7: messages/s into a matrix-bot-sdk appservice (MSC4203 to-device in appservice
 * transactions). One product server on a fresh PostgreSQL database with one appservice
 * registration (exclusive user namespace, ephemeral push on, not rate limited); the appservice is
 * matrix-bot-sdk's `Appservice` in a process of its own (appservice-bot.ts). A few ordinary users
 * send S7_MESSAGES messages, one per sendToDevice, S7_CONCURRENCY requests in flight, to devices
 * of users in the namespace, sent by autocannon (load.ts) as S1's are; timed from the start of its
 * run until the appservice has received them all (each process's Date.now(), one machine).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import type { BotSpec } from './appservice-bot.ts';
import { HttpClient } from './http-client.ts';
import {
  BENCH_DIR,
  CLIENT,
  ROOT,
  type BenchContext,
  type BenchRow,
  type BenchServer,
  type Device,
  atLeast,
  failedRow,
  fmt,
  register,
  sendStream,
  startConfiguredServer,
} from './scenario-support.ts';

const S7_MESSAGES = Number(process.env.BENCH_S7_MESSAGES || 20_000);
// As many in flight as S1's 32 connections, the rate S7 is judged against: at 16 the same client
// sending to ordinary local users reaches only about half of S1 (measured 2026-12-02: 4,163
// req/s at 16 against S1's 8,473), which left no room for the appservice path at all.
const S7_CONCURRENCY = 32;
const S7_SENDERS = 4;
const S7_BRIDGED = 8;
const SERVER_NAME = 's7.bench.local';
const TYPE = 'm.bench.s7';
const WAIT_MS = 180_000;
/** Issue 18: the stream into the appservice at least half of S1's rate on PostgreSQL. */
const TARGET_STREAM_S1 = 0.5;

export async function appserviceScenario(ctx: BenchContext): Promise<BenchRow[]> {
  const scenario = `appservice (matrix-bot-sdk ${botSdkVersion()}, MSC4203): ${fmt(S7_MESSAGES)} messages, one per sendToDevice, from ${S7_SENDERS} users (${S7_CONCURRENCY} in flight) to ${S7_BRIDGED} devices in its exclusive namespace`;
  const dbName = `tds_bench_s7_${randomBytes(4).toString('hex')}`;
  let server: BenchServer | null = null;
  let bot: BenchServer | null = null;
  let c: HttpClient | null = null;
  try {
    const url = await ctx.createDatabase(dbName);
    const botPort = await ctx.freePort();
    const asToken = `as-${randomBytes(8).toString('hex')}`;
    const registration = {
      id: 'benchbridge',
      url: `http://127.0.0.1:${botPort}`,
      as_token: asToken,
      hs_token: `hs-${randomBytes(8).toString('hex')}`,
      sender_localpart: 'benchbridgebot',
      namespaces: { users: [{ exclusive: true, regex: `@bridge_.*:${SERVER_NAME}` }], rooms: [], aliases: [] },
      'de.sorunome.msc2409.push_ephemeral': true,
      rate_limited: false,
    };
    const regFile = path.join(ctx.scratchDir, 's7-registration.yaml');
    writeFileSync(regFile, stringify(registration));
    ctx.log(`S7: server with a matrix-bot-sdk appservice (database ${dbName})`);
    server = await startConfiguredServer(ctx, 's7-server', { serverName: SERVER_NAME, databaseUrl: url, config: { appservices: [regFile] }, profile: true });
    c = new HttpClient('127.0.0.1', server.port, 64);

    const spec: BotSpec = {
      port: botPort,
      homeserverName: SERVER_NAME,
      homeserverUrl: `http://127.0.0.1:${server.port}`,
      registration,
      type: TYPE,
      expect: S7_MESSAGES,
      reportEvery: 1000,
    };
    const { proc, logFile } = ctx.spawnNode('s7-bot', [], path.join(BENCH_DIR, 'appservice-bot.ts'), [JSON.stringify(spec)], {});
    bot = { name: 's7-bot', proc, port: botPort, pid: proc.pid!, logFile };
    const lines = botLines(bot);
    await lines.waitFor((m) => m.ready === true, 60_000, 'the appservice did not start');

    const senders: Device[] = [];
    for (let i = 0; i < S7_SENDERS; i++) senders.push(await register(c, `sender${i}`));
    const bridged: { userId: string; deviceId: string }[] = [];
    for (let i = 0; i < S7_BRIDGED; i++) {
      const body = await c.ok<{ user_id: string; device_id: string }>('POST', `${CLIENT}/register`, {
        token: asToken,
        body: { type: 'm.login.application_service', username: `bridge_${i}`, device_id: `BRIDGE${i}` },
      });
      bridged.push({ userId: body.user_id, deviceId: body.device_id });
    }

    ctx.log(`S7: ${fmt(S7_MESSAGES)} messages to the appservice's users, ${S7_CONCURRENCY} requests in flight`);
    const done = lines.waitFor((m) => m.done !== undefined, WAIT_MS, 'timed out');
    done.catch(() => {}); // awaited below; a failing send must not leave it unhandled
    // Sent by autocannon in a process of its own, as S1 is: the client then costs the 2-core
    // machine what S1's costs it. Request n is sender n mod 4's to device n mod 8.
    const turns = Array.from({ length: S7_SENDERS * S7_BRIDGED }, (_, n) => ({ from: senders[n % S7_SENDERS] as Device, to: bridged[n % S7_BRIDGED]! }));
    const load = await sendStream(ctx, server.port, TYPE, turns, S7_CONCURRENCY, S7_MESSAGES);
    let received: BotMessage;
    try {
      received = await done;
    } catch {
      return [{ id: 'S7', scenario, figure: `incomplete: the appservice received ${fmt(lines.lastCount())} of ${fmt(S7_MESSAGES)} within ${WAIT_MS / 1000} s`, floor: '—', ratio: '—', verdict: 'error' }];
    }
    const seconds = ((received.at ?? Number.NaN) - load.startedAt) / 1000;
    const sentSeconds = S7_MESSAGES / load.reqPerSec;
    const s1 = ctx.references.s1PostgresReqPerSec;
    const target = atLeast(S7_MESSAGES / seconds, TARGET_STREAM_S1, s1, 'S1 PostgreSQL');
    return [
      {
        id: 'S7',
        scenario,
        figure: `${fmt(S7_MESSAGES / seconds)} msg/s into the appservice (all received after ${fmt(seconds, 2)} s; the server accepted the sends at ${fmt(load.reqPerSec)} req/s, the appservice had the last ${fmt((seconds - sentSeconds) * 1000)} ms after)`,
        floor: s1 === null ? '—' : `S1 PostgreSQL ${fmt(s1)} req/s (32 connections)`,
        ...target,
      },
    ];
  } catch (e) {
    return [failedRow('S7', scenario, e)];
  } finally {
    c?.close();
    if (bot !== null) await ctx.stopServer(bot);
    if (server !== null) await ctx.stopServer(server);
    await ctx.dropDatabase(dbName).catch(() => {});
  }
}

function botSdkVersion(): string {
  try {
    return (JSON.parse(readFileSync(path.join(ROOT, 'node_modules/matrix-bot-sdk/package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

interface BotMessage {
  ready?: boolean;
  count?: number;
  done?: number;
  /** With `done`: the bot's Date.now() when it had them all. */
  at?: number;
}

/** The bot's JSON lines on stdout, as they come. */
function botLines(bot: BenchServer) {
  const waiters: { test: (m: BotMessage) => boolean; resolve: (m: BotMessage) => void }[] = [];
  let last = 0;
  let buf = '';
  bot.proc.stdout?.on('data', (chunk: Buffer) => {
    buf += chunk.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let m: BotMessage;
      try {
        m = JSON.parse(line) as BotMessage;
      } catch {
        continue;
      }
      last = m.done ?? m.count ?? last;
      for (const w of [...waiters]) {
        if (w.test(m)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(m);
        }
      }
    }
  });
  return {
    lastCount: () => last,
    waitFor(test: (m: BotMessage) => boolean, timeoutMs: number, what: string): Promise<BotMessage> {
      return new Promise<BotMessage>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(what)), timeoutMs);
        const onExit = (code: number | null) => reject(new Error(`the appservice exited with ${code}`));
        bot.proc.once('exit', onExit);
        waiters.push({
          test,
          resolve: (m) => {
            clearTimeout(timer);
            bot.proc.off('exit', onExit);
            resolve(m);
          },
        });
      });
    },
  };
}
