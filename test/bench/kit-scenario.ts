/**
 * KIT: how fast the module test kit (`testModule`, src/testing) starts: issue 29 asks that a
 * kit-based test file start in well under a second. Each measured process is a fresh node, as a
 * test runner's worker is one per test file, and imports the kit as a module author's tests do:
 * the installed package's built JavaScript (`matrix-to-device-server/testing` resolves to
 * dist/src/testing/index.js, and vitest imports a dependency as it is, untransformed). One
 * process runs first unmeasured, so the migrated template in the temporary folder exists, as it
 * does on any machine after its first run.
 *
 * Its floor (F5) is what any kit on PGlite costs at the least: a node process that imports PGlite
 * and opens the same template with the kit's settings. Floor and kit run in turns, so the
 * machine's drift falls on both. A third figure, for this repository's own handler tests: the
 * kit from the sources under `node --import tsx`.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { KIT_POSTGRESQL_CONF, kitTemplateFile } from '../../src/testing/kit-database.ts';
import type { BenchRow } from './scenario-support.ts';

const PROCESSES = 5;
/** Issue 29's target, absolute; reported beside the ratio. */
const ISSUE_29_MS = 1000;
/** The kit may add at most half of what its PGlite costs (imports of the SDK, its own set-up). */
const TARGET_RATIO = 1.5;
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface KitRun {
  fromFileMs: number;
  firstMs: number;
  later: number[];
}

/** A test file's body: first kit from the file's start, then later kits of the same process. */
function kitScript(testing: string, ping: string): string {
  return `
    const fileStart = performance.now();
    const { testModule } = await import(${JSON.stringify(testing)});
    const { default: ping } = await import(${JSON.stringify(ping)});
    const first = await testModule(ping);
    const firstMs = performance.now();
    await first.deliver('org.example.ping', { nonce: 'n' });
    await first.close();
    const later = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      const kit = await testModule(ping);
      await kit.deliver('org.example.ping', { nonce: 'n' });
      await kit.close();
      later.push(performance.now() - t);
    }
    process.stdout.write(JSON.stringify({ fromFileMs: firstMs - fileStart, firstMs, later }) + '\\n');
    // The kit keeps its emptied PGlite for a next kit a while; nothing follows here.
    process.exit(0);`;
}

/** The floor: PGlite imported and started from the kit's template, nothing else. */
function floorScript(): string {
  return `
    const start = performance.now();
    const { PGlite } = await import('@electric-sql/pglite');
    const { readFile } = await import('node:fs/promises');
    const raw = new PGlite({ postgresqlconf: ${JSON.stringify(KIT_POSTGRESQL_CONF)}, loadDataDir: new Blob([await readFile(${JSON.stringify(kitTemplateFile())})]) });
    await raw.waitReady;
    await raw.query('select 1');
    process.stdout.write(JSON.stringify({ ms: performance.now() - start }) + '\\n');
    process.exit(0);`;
}

function runNode(args: string[]): unknown {
  const out = execFileSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  return JSON.parse(out.trim().split('\n').pop() ?? '{}');
}

const builtKit = (): KitRun =>
  runNode(['--input-type=module', '-e', kitScript(`${ROOT}dist/src/testing/index.js`, `${ROOT}dist/handlers/ping/index.js`)]) as KitRun;
/** The same test file, run from this checkout's sources under tsx, as this repository's own handler tests run. */
const sourceKit = (): KitRun =>
  runNode(['--import', 'tsx', '--input-type=module', '-e', kitScript(`${ROOT}src/testing/index.ts`, `${ROOT}handlers/ping/index.ts`)]) as KitRun;
const floor = (): number => (runNode(['--input-type=module', '-e', floorScript()]) as { ms: number }).ms;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
};

/** Needs dist/ (`npm run build`): the bench builds before it runs KIT. */
export function kitScenario(fmt: (n: number, digits?: number) => string): BenchRow[] {
  builtKit();
  const floors: number[] = [];
  const kits: KitRun[] = [];
  for (let i = 0; i < PROCESSES; i++) {
    // In turns, alternating which goes first.
    if (i % 2 === 0) {
      floors.push(floor());
      kits.push(builtKit());
    } else {
      kits.push(builtKit());
      floors.push(floor());
    }
  }
  const sources = Array.from({ length: PROCESSES }, sourceKit);
  const f5 = median(floors);
  const fromFile = median(kits.map((r) => r.fromFileMs));
  const first = median(kits.map((r) => r.firstMs));
  const later = median(kits.flatMap((r) => r.later));
  const fromSources = median(sources.map((r) => r.fromFileMs));
  const ratio = fromFile / f5;
  return [
    {
      id: 'F5',
      scenario: `a bare PGlite: a node process imports PGlite and opens the kit's template with the kit's settings (median of ${PROCESSES} processes, in turns with KIT)`,
      figure: `${fmt(f5)} ms`,
      floor: '—',
      ratio: '—',
      verdict: 'floor',
    },
    {
      id: 'KIT',
      scenario: `module test kit, as a module author's tests import it (the built package): a test file's start (imports included) → its first \`testModule(ping)\` ready (median of ${PROCESSES} processes)`,
      figure: `${fmt(fromFile)} ms (issue 29's absolute < ${fmt(ISSUE_29_MS)} ms: ${fromFile < ISSUE_29_MS ? 'met' : 'not met'})`,
      floor: `F5 ${fmt(f5)} ms`,
      ratio: `${fmt(ratio, 2)} × F5 (target ≤ ${TARGET_RATIO})`,
      verdict: ratio <= TARGET_RATIO ? 'PASS' : 'MISS',
    },
    {
      id: 'KIT',
      scenario: "module test kit: the same from the process's start (node starting included)",
      figure: `${fmt(first)} ms`,
      floor: '—',
      ratio: 'no target',
      verdict: 'info',
    },
    {
      id: 'KIT',
      scenario: 'module test kit: a later kit in the same process (open, one event, close; median)',
      figure: `${fmt(later, 1)} ms`,
      floor: '—',
      ratio: `${fmt(later / fromFile, 3)} × the first (no target)`,
      verdict: 'info',
    },
    {
      id: 'KIT',
      scenario: "module test kit from this checkout's sources under `node --import tsx` (how this repository's own handler tests run): a test file's start → first kit ready",
      figure: `${fmt(fromSources)} ms`,
      floor: `F5 ${fmt(f5)} ms`,
      ratio: `${fmt(fromSources / f5, 2)} × F5 (no target: the loader compiles the sources and hooks every import)`,
      verdict: 'info',
    },
  ];
}
