import { encodeFeatureSeries } from '../src/data/features/block.js';
import { computeFeatures, WARMUP_DAYS } from '../src/data/features/compute.js';
import { minHistoryBars } from '../src/config.js';
import { SourceError, type SourceErrorCode } from '../src/data/errors.js';
import { SimSource } from '../src/data/sources/sim.js';
import type { Bar, DataQuality, FetchRange, SourceResult } from '../src/data/types.js';
import type { Domain } from '../src/domains.js';
import type { Hidden } from '../src/router/layout.js';
import type { MarketContext } from '../src/data/features/context.js';
import { errorText } from '../src/util/errors.js';
import type { BatchOutcome } from './task-batcher.js';

/**
 * Bars as columns: a structured clone of an array of 300 small objects costs about 0.5 ms per ticker on the fetch
 * worker's main thread (measured with `bench:pipeline --cpu-prof`), a typed array moves for free (transferred).
 */
export interface BarColumns {
  dates: string[];
  /** Per bar: open, high, low, close, adjClose, volume (NaN for a missing volume). */
  values: Float64Array;
}

const COLS = 6;

export function barsToColumns(bars: readonly Bar[]): BarColumns {
  const values = new Float64Array(bars.length * COLS);
  bars.forEach((b, i) => {
    values.set([b.open, b.high, b.low, b.close, b.adjClose, b.volume ?? Number.NaN], i * COLS);
  });
  return { dates: bars.map((b) => b.date), values };
}

export function columnsToBars(c: BarColumns): Bar[] {
  return c.dates.map((date, i) => {
    const o = i * COLS;
    const v = c.values;
    const volume = v[o + 5]!;
    return { date, open: v[o]!, high: v[o + 1]!, low: v[o + 2]!, close: v[o + 3]!, adjClose: v[o + 4]!, volume: Number.isNaN(volume) ? null : volume };
  });
}

/**
 * Input of one feature task: bars fetched on the main thread, or a simulator request the thread answers itself.
 * `context` holds the run's reference series (context.ts), fetched once per run on the main thread; its typed
 * arrays clone as plain copies.
 */
export type FeatureTask =
  /**
   * `days`: the routed days the run asked for (`range.days`); the task keeps the last `days` tokens, the bars before
   * them being history. Without it (an older caller), the tokens of bars from WARMUP_DAYS on, as feature spec v3 gave,
   * or every token when the series is shorter.
   */
  | { ticker: string; hidden: Hidden; context: MarketContext; bars: BarColumns; days?: number }
  /** The simulator is CPU work like the features; running both here keeps the worker's main thread for BullMQ. */
  | { ticker: string; hidden: Hidden; context: MarketContext; sim: { seed: number; range: FetchRange } };

export type FeatureTaskResult =
  | {
      /** `encodeFeatureSeries` block (a Buffer arrives as a plain Uint8Array on the other side). */
      block: Uint8Array;
      /** Routed days in the block. */
      days: number;
      /** What the in-thread source said about the series (sim tasks only). */
      source?: { quality: DataQuality; class?: Domain; subtype?: string };
    }
  /** A source error of an in-thread source, as data: an Error crossing threads loses its `code`. */
  | { sourceError: { code: SourceErrorCode; message: string } };

/**
 * Several tasks in one pool task (`TaskBatcher`): one hand-over each way, and a context that the tasks share is
 * cloned once. Each task's outcome is its own: one that throws fails alone.
 */
export interface FeatureBatch {
  batch: FeatureTask[];
}

export interface FeatureBatchResult {
  outcomes: BatchOutcome<FeatureTaskResult>[];
}

const simSources = new Map<number, SimSource>();

function simSource(seed: number): SimSource {
  let s = simSources.get(seed);
  if (s === undefined) {
    if (simSources.size >= 16) simSources.clear();
    s = new SimSource(seed);
    simSources.set(seed, s);
  }
  return s;
}

/**
 * Piscina task: features of one ticker, encoded for Redis. Runs off the main thread because a few hundred days ×
 * rolling windows for many tickers would otherwise stall the worker's lock renewals.
 */
export default async function featureTask(task: FeatureTask): Promise<FeatureTaskResult>;
export default async function featureTask(task: FeatureBatch): Promise<FeatureBatchResult>;
export default async function featureTask(task: FeatureTask | FeatureBatch): Promise<FeatureTaskResult | FeatureBatchResult> {
  if ('batch' in task) {
    const outcomes: BatchOutcome<FeatureTaskResult>[] = [];
    for (const t of task.batch) {
      try {
        outcomes.push({ ok: await oneTask(t) });
      } catch (err) {
        outcomes.push({ error: errorText(err) });
      }
    }
    return { outcomes };
  }
  return oneTask(task);
}

async function oneTask(task: FeatureTask): Promise<FeatureTaskResult> {
  let bars: Bar[];
  let source: SourceResult | undefined;
  if ('sim' in task) {
    try {
      source = await simSource(task.sim.seed).fetch(task.ticker, task.sim.range);
    } catch (err) {
      if (err instanceof SourceError) return { sourceError: { code: err.code, message: err.message } };
      throw err;
    }
    bars = source.bars;
  } else {
    bars = columnsToBars(task.bars);
  }
  // The routed days: the last `days` tokens. A source delivers `days + WARMUP_DAYS` bars of a full history, so a full
  // history routes exactly the days it did under v3; a shorter one (from MIN_HISTORY_BARS bars on) routes what it has.
  const days = 'sim' in task ? task.sim.range.days : (task.days ?? (bars.length > WARMUP_DAYS ? bars.length - WARMUP_DAYS : undefined));
  const series = computeFeatures(task.ticker, bars, task.hidden, task.context, { minBars: minHistoryBars(), ...(days !== undefined ? { days } : {}) });
  const block = encodeFeatureSeries(series);
  if (source === undefined) return { block, days: series.dates.length };
  const meta: { quality: DataQuality; class?: Domain; subtype?: string } = { quality: source.quality };
  if (source.class !== undefined) meta.class = source.class;
  if (source.subtype !== undefined) meta.subtype = source.subtype;
  return { block, days: series.dates.length, source: meta };
}
