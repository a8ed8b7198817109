/**
 * Writes one labelled folder of simulated instruments per regime family (`DIR/<family>/`: `<TICKER>.csv` and
 * `labels.csv`, 4 instruments of every sub-type on one market history of 700 business days, seed SEED + the family's
 * index, SEED 40001 unless given: never a training seed) and the reference series of that history beside it
 * (`DIR/<family>-context/`: SPY, IEF, GLD, DBC, UUP), so that `npm run evaluate` can route a folder of each regime
 * with its context (`--context-dir`), without it (`--stand-in-context off`) and with stand-ins (docs/features.md,
 * "Stand-in context"). Another SEED (40101 in docs/features.md) gives a second set of twelve histories, to fit on one
 * set and measure on the other.
 *
 *   node --import tsx scripts/sim-folders.ts DIR [SEED]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REGIME_FAMILIES } from '../src/data/sim/regimes.js';
import { simulateContextBars, trainingSet } from '../src/data/sim/simulator.js';
import type { Bar } from '../src/data/types.js';

const root = process.argv[2];
const seedArg = process.argv[3] ?? '40001';
const first = Number(seedArg);
if (root === undefined || process.argv.length > 4 || !/^\d+$/.test(seedArg) || !Number.isSafeInteger(first)) {
  console.error(`usage: node --import tsx scripts/sim-folders.ts DIR [SEED] (SEED a whole number, the first family's; received ${JSON.stringify(process.argv.slice(2))})`);
  process.exit(2);
}
const csv = (bars: readonly Bar[]): string =>
  ['date,open,high,low,close,adj_close,volume', ...bars.map((b) => `${b.date},${b.open},${b.high},${b.low},${b.close},${b.adjClose},${b.volume ?? ''}`)].join('\n') + '\n';
REGIME_FAMILIES.forEach((family, i) => {
  const seed = first + i;
  const dir = path.join(root, family);
  const ctx = path.join(root, `${family}-context`);
  mkdirSync(dir, { recursive: true });
  mkdirSync(ctx, { recursive: true });
  const labels = ['ticker,class'];
  for (const s of trainingSet({ seed, tickersPerSubtype: 4, days: 700, family, marketPaths: 1, gappyShare: 0.1, closeOnlyShare: 0 })) {
    const ticker = s.ticker.replace(/[^A-Z0-9]/g, '');
    writeFileSync(path.join(dir, `${ticker}.csv`), csv(s.bars));
    labels.push(`${ticker},${s.class}`);
  }
  writeFileSync(path.join(dir, 'labels.csv'), labels.join('\n') + '\n');
  for (const [ticker, bars] of simulateContextBars(seed, 700, undefined, family)) writeFileSync(path.join(ctx, `${ticker}.csv`), csv(bars));
});
console.log(`wrote ${REGIME_FAMILIES.length} folders and their context to ${root}`);
