/**
 * KIT: how fast the module test kit (`testModule`, src/testing) starts: issue 29 asks that a
 * kit-based test file start in well under a second. Each measured process (kit-start.ts) is a
 * fresh `node --import tsx`, as a test runner's worker is one per test file; one process runs
 * first unmeasured, so the migrated template in the temporary folder exists, as it does on any
 * machine after its first run.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { BenchRow } from './scenario-support.ts';

const PROCESSES = 5;
const TARGET_MS = 1000;

function runOnce(): { fromFileMs: number; firstMs: number; later: number[] } {
  const script = fileURLToPath(new URL('./kit-start.ts', import.meta.url));
  const out = execFileSync(process.execPath, ['--import', 'tsx', script], { encoding: 'utf8', timeout: 120_000 });
  return JSON.parse(out.trim().split('\n').pop() ?? '{}') as { fromFileMs: number; firstMs: number; later: number[] };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
};

export function kitScenario(fmt: (n: number, digits?: number) => string): BenchRow[] {
  runOnce();
  const runs = Array.from({ length: PROCESSES }, runOnce);
  const fromFile = median(runs.map((r) => r.fromFileMs));
  const first = median(runs.map((r) => r.firstMs));
  const later = median(runs.flatMap((r) => r.later));
  return [
    {
      id: 'KIT',
      scenario: `module test kit: a test file's start (imports included) → its first \`testModule(ping)\` ready (median of ${PROCESSES} processes)`,
      figure: `${fmt(fromFile)} ms`,
      floor: '—',
      ratio: `target < ${fmt(TARGET_MS)} ms`,
      verdict: fromFile < TARGET_MS ? 'PASS' : 'MISS',
    },
    {
      id: 'KIT',
      scenario: 'module test kit: the same from the process\'s start (node and tsx starting included)',
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
  ];
}
