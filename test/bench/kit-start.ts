/**
 * One process of the KIT rows (kit-scenario.ts): how long until a module's first test kit is
 * ready, counted from this process's start as a test runner's worker would see it, and how long
 * each later kit of the same process takes. Prints one JSON line.
 */
import { performance } from 'node:perf_hooks';

// A test file's start: node and the loader are up, nothing of the kit or the module imported yet.
const fileStart = performance.now();
const { testModule } = await import('../../src/testing/index.ts');
const { default: ping } = await import('../../handlers/ping/index.ts');
const first = await testModule(ping);
// performance.now() counts from the process's start: node, the loader and every import included.
const firstMs = performance.now();
await first.deliver('org.example.ping', { nonce: 'n' });
await first.close();
const later: number[] = [];
for (let i = 0; i < 5; i++) {
  const t = performance.now();
  const kit = await testModule(ping);
  await kit.deliver('org.example.ping', { nonce: 'n' });
  await kit.close();
  later.push(performance.now() - t);
}
process.stdout.write(`${JSON.stringify({ fromFileMs: firstMs - fileStart, firstMs, later })}\n`);
// The kit keeps its emptied PGlite for a next kit a while; nothing follows here.
process.exit(0);
