import { encodeFeatureSeries } from '../src/data/feature-block.js';
import { computeFeatures } from '../src/data/features.js';
import type { Bar } from '../src/data/types.js';
import type { MarketContext } from '../src/data/context.js';
import type { Hidden } from '../src/router/layout.js';

/** Input of one feature task (piscina structured-clones it into the worker thread). */
export interface FeatureTask {
  ticker: string;
  bars: Bar[];
  hidden: Hidden;
  /** Reference series of the run (context.ts); structured-cloned with the task. */
  context: MarketContext;
}

export interface FeatureTaskResult {
  /** `encodeFeatureSeries` block (a Buffer arrives as a plain Uint8Array on the other side). */
  block: Uint8Array;
  /** Routed days in the block. */
  days: number;
}

/**
 * Piscina task: features of one ticker, encoded for Redis. Runs off the main thread because a few hundred days ×
 * rolling windows for many tickers would otherwise stall the worker's lock renewals.
 */
export default function featureTask(task: FeatureTask): FeatureTaskResult {
  const series = computeFeatures(task.ticker, task.bars, task.hidden, task.context);
  const block = encodeFeatureSeries(series);
  return { block, days: series.dates.length };
}
