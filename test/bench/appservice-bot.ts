/**
 * The appservice for S7, run as its own process by appservice-scenario.ts: matrix-bot-sdk's
 * `Appservice` (its native crypto dependency is stubbed by package.json `overrides`; no crypto is
 * used). Reads a BotSpec as JSON from argv[2]; prints JSON lines on stdout: `{"ready":true}` once
 * listening, `{"count":n}` every `reportEvery` messages of `type`, and `{"done":n,"at":ms}` at `expect` (`at`: its Date.now()).
 */
import { Appservice, LogLevel, LogService, MemoryStorageProvider, type IAppserviceRegistration } from 'matrix-bot-sdk';

export interface BotSpec {
  port: number;
  homeserverName: string;
  homeserverUrl: string;
  registration: Record<string, unknown>;
  type: string;
  expect: number;
  reportEvery: number;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as BotSpec;
LogService.setLevel(LogLevel.ERROR);
const as = new Appservice({
  port: spec.port,
  bindAddress: '127.0.0.1',
  homeserverName: spec.homeserverName,
  homeserverUrl: spec.homeserverUrl,
  registration: spec.registration as unknown as IAppserviceRegistration,
  storage: new MemoryStorageProvider(),
});
let count = 0;
as.on('ephemeral.event', (e: { type?: string }) => {
  if (e.type !== spec.type) return;
  count++;
  if (count === spec.expect) process.stdout.write(`${JSON.stringify({ done: count, at: Date.now() })}\n`);
  else if (count % spec.reportEvery === 0) process.stdout.write(`${JSON.stringify({ count })}\n`);
});
await as.begin();
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
process.once('SIGTERM', () => {
  as.stop();
  process.exit(0);
});
