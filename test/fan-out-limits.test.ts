import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { overHttp, TestClient } from './support/client.ts';
import { freePort, ServerProcess } from './support/server-process.ts';

/**
 * One request fanning out to 50,000 users on 50,000 servers that refuse connections (loopback
 * addresses with nothing listening, so nothing leaves the machine): it is answered, the server
 * keeps answering `/versions` within 2 s while it works through them, and after a kill and a
 * restart with that backlog it is up and answering again within seconds.
 */
const SERVERS = 50_000;
let server: ServerProcess;

beforeAll(async () => {
  server = await ServerProcess.create('fanout.test', await freePort(), {
    federation: { allow_http: true, backoff_initial_ms: 1_000, backoff_max_ms: 60_000 },
  });
  await server.start();
}, 120_000);

afterAll(async () => {
  await server?.destroy();
});

/** Polls `/versions` every 100 ms until `stop`, keeping the slowest answer (a failure counts as Infinity). */
function watchVersions(baseUrl: string): { stop(): Promise<number> } {
  let worst = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const started = performance.now();
      try {
        const res = await fetch(`${baseUrl}/_matrix/client/versions`, { signal: AbortSignal.timeout(5_000) });
        await res.arrayBuffer();
        worst = Math.max(worst, res.ok ? performance.now() - started : Infinity);
      } catch {
        worst = Infinity;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return worst;
    },
  };
}

const serverName = (i: number) => `127.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}:9`;

describe('fan-out to many unreachable servers', () => {
  it(`answers one request to ${SERVERS.toLocaleString('en')} users on as many servers, and /versions within 2 s throughout and after a restart`, async () => {
    const alice = await TestClient.register(overHttp(server.baseUrl), 'alice');
    const messages = Object.fromEntries(Array.from({ length: SERVERS }, (_, i) => [`@u:${serverName(i)}`, { D: { i } }]));
    const watch = watchVersions(server.baseUrl);
    const res = await alice.sendToDevice('m.fanout', messages);
    expect(res.status).toBe(200);
    // The sender works through the destinations meanwhile.
    await new Promise((r) => setTimeout(r, 15_000));
    expect(await watch.stop()).toBeLessThan(2_000);

    await server.stop('SIGKILL');
    const restarted = performance.now();
    await server.start();
    expect(performance.now() - restarted).toBeLessThan(20_000);
    const after = watchVersions(server.baseUrl);
    await new Promise((r) => setTimeout(r, 10_000));
    expect(await after.stop()).toBeLessThan(2_000);
  }, 240_000);
});
