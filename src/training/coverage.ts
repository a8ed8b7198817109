/**
 * How well the simulator's instruments cover a real labelled folder, feature by feature: for each real ticker, the
 * features whose mean over its tokens falls outside the range its class's simulated instruments span. A router learns
 * a class from the simulator; a real ticker whose feature sits where no simulated instrument of its class ever does
 * (and perhaps where another class's do) is one the router has to guess on. This is how the simulator's volume noise
 * of leveraged and index funds was found too narrow (docs/features.md, "Simulator v8").
 */
import { DOMAINS, domainIndex } from '../domains.js';
import { computeFeatures, FEATURE_TABLE, MIN_HISTORY_BARS } from '../data/features/compute.js';
import { LONG } from '../data/features/table.js';
import { trainingInstruments } from '../data/sim/simulator.js';
import { REGIME_FAMILIES } from '../data/sim/regimes.js';
import type { FeatureSeries, Hidden } from '../data/types.js';

export interface CoverageOptions {
  hidden: Hidden;
  /** Market histories simulated, seeds `firstSeed …`, the regime families in turn. @defaultValue 24 */
  histories?: number;
  /** @defaultValue 7 (the training recipe's first seed) */
  firstSeed?: number;
  /** Simulated instruments per sub-type and history. @defaultValue 4 */
  tickersPerSubtype?: number;
  /** Quantiles of a class's simulated means that bound its range. @defaultValue [0.02, 0.98] */
  quantiles?: readonly [number, number];
}

/** Per class (DOMAINS order), per feature: the [low, high] of its simulated instruments' means. */
export type ClassRanges = [number, number][][];

export interface OutsideFeature {
  feature: string;
  value: number;
  low: number;
  high: number;
}

export interface CoverageRow {
  ticker: string;
  label: number;
  /** The features outside the class's range, furthest first. */
  outside: OutsideFeature[];
}

/**
 * Mean of each feature over the tokens of `series` whose windows are whole (bar LONG on; all tokens when the series is
 * shorter): what a routed year of the instrument reads, without its first months.
 */
export function meanFeatures(series: Pick<FeatureSeries, 'x' | 'hidden' | 'vol'>, minBars = MIN_HISTORY_BARS): Float64Array {
  const h = series.hidden;
  const n = series.vol.length;
  const whole = Math.max(0, LONG - (minBars - 1));
  const from = n > whole ? whole : 0;
  const m = new Float64Array(h);
  for (let i = from; i < n; i++) for (let k = 0; k < h; k++) m[k] = m[k]! + series.x[i * h + k]!;
  for (let k = 0; k < h; k++) m[k] = m[k]! / Math.max(1, n - from);
  return m;
}

/** The q-quantile of ascending `sorted` (nearest rank). */
function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.floor(q * sorted.length)))] ?? Number.NaN;
}

/**
 * The simulator's range of each feature per class: `histories` market histories of the training recipe's families
 * (each with its whole context, no new listings), every instrument's mean features (`meanFeatures`), their quantiles.
 */
export function simulatedClassRanges(opts: CoverageOptions): ClassRanges {
  const { hidden } = opts;
  const histories = opts.histories ?? 24;
  const first = opts.firstSeed ?? 7;
  const [qLo, qHi] = opts.quantiles ?? [0.02, 0.98];
  if (!(Number.isInteger(histories) && histories >= 1)) throw new RangeError(`Expected integer ≥ 1 for histories but received ${String(histories)}`);
  if (!(qLo >= 0 && qLo < qHi && qHi <= 1)) throw new RangeError(`Expected 0 ≤ low < high ≤ 1 for quantiles but received [${qLo}, ${qHi}]`);
  const means: Float64Array[][] = DOMAINS.map(() => []);
  for (let i = 0; i < histories; i++) {
    const family = REGIME_FAMILIES[i % REGIME_FAMILIES.length]!;
    for (const ins of trainingInstruments({ seed: first + i, tickersPerSubtype: opts.tickersPerSubtype ?? 4, days: 1000, family })) {
      const f = computeFeatures(ins.ticker, ins.bars, hidden, ins.context);
      means[domainIndex(ins.class)]!.push(meanFeatures(f));
    }
  }
  return means.map((rows) => Array.from({ length: hidden }, (_, k): [number, number] => {
    const col = rows.map((m) => m[k]!).sort((a, b) => a - b);
    return [quantile(col, qLo), quantile(col, qHi)];
  }));
}

/** Each real ticker's features outside its class's simulated range by more than `margin`, furthest first. */
export function coverageRows(items: readonly { series: FeatureSeries; label: number }[], ranges: ClassRanges, margin = 0.25): CoverageRow[] {
  return items.map(({ series, label }) => {
    const m = meanFeatures(series);
    const outside: (OutsideFeature & { by: number })[] = [];
    for (let k = 0; k < series.hidden; k++) {
      const [low, high] = ranges[label]![k]!;
      const value = m[k]!;
      const by = value < low ? low - value : value > high ? value - high : 0;
      if (by > margin) outside.push({ feature: FEATURE_TABLE[k]!.name, value, low, high, by });
    }
    outside.sort((a, b) => b.by - a.by);
    return { ticker: series.ticker, label, outside: outside.map(({ by: _by, ...o }) => o) };
  });
}
