/**
 * `npm run study -- --leave-one-family-out`: how the training recipe carries to a market regime it never saw. For
 * each regime family (src/data/sim/regimes.ts) a router is trained on the other families and scored on held-out
 * histories of the one left out; the table gives per-day and per-ticker accuracy and calibration error of each.
 * `npm run study -- --coverage --real-data DIR`: which features of each real labelled ticker lie outside what the
 * simulator's instruments of its class show (src/training/coverage.ts); no training.
 * Exit code 0 on success, 2 on bad usage, 1 when training fails.
 */
import { writeFileSync } from 'node:fs';
import { REGIME_FAMILIES, type RegimeFamily } from '../data/sim/regimes.js';
import { defaultTrainConfig, trainRouter } from '../training/train.js';
import { hiddenFlag, intFlag, listFlag, parseArgs, type ParsedArgs, REAL_DATA_FLAGS, realDataFlags, realTrainingData, seedsFlag, UsageError, trainingSetFlags, TRAINING_SET_FLAGS } from './args.js';
import { trainEnsemble } from '../training/ensemble.js';
import { coverageRows, simulatedClassRanges } from '../training/coverage.js';
import { loadLabelledDirectory } from '../training/evaluate.js';
import { DOMAINS } from '../domains.js';
import { closeTrainingWorkPools } from '../training/work-pool.js';
import { EXIT, runCommand, runIfMain } from './run.js';

const USAGE = `usage: npm run study -- --coverage --real-data DIR [--real-labels FILE] [--real-context-dir DIR] [--hidden 16|32] [--train-seeds N] [--json FILE]
       npm run study -- --leave-one-family-out [--families A,B,...] [--hidden 16|32] [--steps N] [--train-seeds N] [--seed N | --seeds A,B,...] [--threads N] [--vol-scale-share P] [--vol-scale-range LO,HI] [--vol-scale-where all|whole-context] [--context-inception-share P] [--stand-in-share P] [--json FILE]
                       [--real-data DIR [--real-labels FILE] [--real-context-dir DIR] [--real-repeat R] [--real-listings L] [--real-context-dropout P]]

Trains one router per family with that family left out (same recipe as npm run train otherwise) and scores it on
held-out histories of the family it never saw; with --seeds, an ensemble of one router per seed (as npm run train --
--seeds) scored on the first seed's held-out histories. --real-data adds a real labelled folder to every router's
training set as npm run train -- --real-data does (its period is then never wholly unseen: the development folder's
2020–2025 holds the 2020 crash and the 2022 rate shock). Families: ${REGIME_FAMILIES.join(', ')}.

--coverage trains nothing: it simulates --train-seeds market histories (default 24, the families in turn, every
instrument with its whole context) and lists, for each ticker of the real folder, the features whose mean over its
routed year lies beyond the 2nd–98th percentiles of its class's simulated instruments (by more than 0.25 normalised
units): where the simulator never shows an instrument of that class, the router has to guess.`;

/** Per-day accuracy a router must keep on a regime family it was not trained on (issue target). */
export const LEFT_OUT_TARGET = 0.95;

export interface LeftOutRow {
  family: RegimeFamily;
  perDay: number;
  perTicker: number;
  ece: number;
  days: number;
  /** Per-day accuracy on the held-out histories of the families it did train on. */
  trainedFamiliesPerDay: number;
  /** Per-day accuracy of the left-out family's histories by sub-type. */
  bySubtype: Record<string, number>;
  seconds: number;
}

/** The `n` sub-types routed worst, as `name 87.1 %`. */
export function weakestSubtypes(bySubtype: Record<string, number>, n = 3): string {
  return Object.entries(bySubtype)
    .sort((a, b) => a[1] - b[1])
    .slice(0, n)
    .map(([k, v]) => `${k} ${(100 * v).toFixed(1)} %`)
    .join(', ');
}

export function main(argv: readonly string[]): Promise<number> {
  return runCommand('study', () => study(argv).finally(closeTrainingWorkPools));
}

async function study(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv, {
    'leave-one-family-out': { type: 'boolean' },
    coverage: { type: 'boolean' },
    families: { type: 'string' },
    hidden: { type: 'string' },
    steps: { type: 'string' },
    'train-seeds': { type: 'string' },
    seed: { type: 'string' },
    seeds: { type: 'string' },
    threads: { type: 'string' },
    ...TRAINING_SET_FLAGS,
    json: { type: 'string' },
    ...REAL_DATA_FLAGS,
    help: { type: 'boolean' },
  });
  if (args.flags.has('help')) {
    console.log(USAGE);
    return EXIT.ok;
  }
  if (args.positionals.length > 0) throw new UsageError(`Expected no positional arguments but received ${JSON.stringify(args.positionals[0])}`);
  if (args.flags.has('coverage')) return coverage(args);
  if (!args.flags.has('leave-one-family-out')) throw new UsageError('Expected --leave-one-family-out or --coverage but received neither');
  const families = listFlag(args, 'families', REGIME_FAMILIES, REGIME_FAMILIES);
  const hidden = hiddenFlag(args);
  const seeds = seedsFlag(args);
  const base = defaultTrainConfig({ hidden, seed: seeds?.[0] ?? intFlag(args, 'seed', 7, 0, 2 ** 31 - 1), steps: intFlag(args, 'steps', defaultTrainConfig().steps, 1, 1_000_000) });
  base.threads = intFlag(args, 'threads', base.threads, 1, 256);
  base.data.trainSeeds = intFlag(args, 'train-seeds', base.data.trainSeeds, 1, 1000);
  trainingSetFlags(args, base.data);
  if (args.flags.has('real-folds')) throw new UsageError('Expected no --real-folds with study (it scores simulator families, not the real folder) but received one');
  const real = realDataFlags(args);
  if (real !== undefined) base.data.real = realTrainingData(real);
  const hooks = { warn: (m: string) => console.warn(`warning: ${m}`) };
  const rows: LeftOutRow[] = [];
  console.log('left-out family        per day  per ticker    ECE   days   trained families per day   seconds');
  for (const family of families) {
    const config = structuredClone(base);
    config.data.families = REGIME_FAMILIES.filter((f) => f !== family);
    const r = seeds === undefined ? await trainRouter(config, hooks) : await trainEnsemble(config, seeds, hooks);
    const seconds = 'memberSeconds' in r ? r.memberSeconds.reduce((a, v) => a + v, 0) : r.seconds.total;
    const held = r.testByFamily[family]!;
    const others = Object.entries(r.testByFamily).filter(([f]) => f !== family);
    const otherDays = others.reduce((a, [, m]) => a + m.days, 0);
    const row: LeftOutRow = {
      family,
      perDay: held.perDay,
      perTicker: held.perTicker,
      ece: held.ece,
      days: held.days,
      trainedFamiliesPerDay: others.reduce((a, [, m]) => a + m.perDay * m.days, 0) / Math.max(1, otherDays),
      bySubtype: held.bySubtype,
      seconds,
    };
    rows.push(row);
    const pct = (v: number) => `${(100 * v).toFixed(2)} %`.padStart(9);
    console.log(
      `${family.padEnd(20)} ${pct(row.perDay)} ${pct(row.perTicker)}   ${row.ece.toFixed(3)} ${String(row.days).padStart(7)}   ${pct(row.trainedFamiliesPerDay).padStart(24)}   ${row.seconds.toFixed(0).padStart(7)}${row.perDay < LEFT_OUT_TARGET ? '   below target' : ''}`,
    );
    console.log(`  weakest: ${weakestSubtypes(row.bySubtype)}`);
  }
  const worst = rows.reduce((a, b) => (b.perDay < a.perDay ? b : a));
  console.log(`worst left-out family: ${worst.family} at ${(100 * worst.perDay).toFixed(2)} % per day (target ≥ ${100 * LEFT_OUT_TARGET} %)`);
  const jsonOut = args.flags.get('json');
  if (typeof jsonOut === 'string') writeFileSync(jsonOut, `${JSON.stringify({ steps: base.steps, seed: base.seed, ...(seeds ? { seeds } : {}), ...(base.data.real ? { real: base.data.real } : {}), rows }, null, 1)}\n`);
  return EXIT.ok;
}

/** Flags the coverage mode reads; any other is refused (it trains nothing). */
const COVERAGE_FLAGS = new Set(['coverage', 'real-data', 'real-labels', 'real-context-dir', 'hidden', 'train-seeds', 'json']);

async function coverage(args: ParsedArgs): Promise<number> {
  const other = [...args.flags.keys()].find((f) => !COVERAGE_FLAGS.has(f));
  if (other !== undefined) throw new UsageError(`Expected only ${[...COVERAGE_FLAGS].map((f) => `--${f}`).join(', ')} with --coverage but received --${other}`);
  const real = realDataFlags(args);
  if (real === undefined) throw new UsageError('Expected --real-data DIR with --coverage but received none');
  const hidden = hiddenFlag(args);
  const histories = intFlag(args, 'train-seeds', 24, 1, 1000);
  const dir = await loadLabelledDirectory({ dataDir: real.dataDir, ...(real.labelsFile ? { labelsFile: real.labelsFile } : {}), ...(real.contextDir ? { contextDir: real.contextDir } : {}) }, hidden);
  const ranges = simulatedClassRanges({ hidden, histories });
  const rows = coverageRows(dir.items, ranges);
  for (const r of rows.filter((r) => r.outside.length > 0)) {
    const what = r.outside.map((o) => `${o.feature} ${o.value.toFixed(2)} (simulated ${o.low.toFixed(2)} … ${o.high.toFixed(2)})`).join('; ');
    console.log(`${r.ticker} (${DOMAINS[r.label]}): ${what}`);
  }
  const covered = rows.filter((r) => r.outside.length === 0).length;
  console.log(`${covered} of ${rows.length} tickers inside their class's simulated range on every feature (${histories} simulated histories)`);
  const jsonOut = args.flags.get('json');
  if (typeof jsonOut === 'string') writeFileSync(jsonOut, `${JSON.stringify({ histories, rows }, null, 1)}\n`);
  return EXIT.ok;
}

await runIfMain(import.meta.url, main);
