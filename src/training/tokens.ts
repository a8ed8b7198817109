/**
 * Training and evaluation tokens from the simulator: each seed is one market history whose instruments are simulated
 * and turned into tokens by the pipeline's feature function. Seeds are independent, so they spread over worker
 * threads (`tokens.task.ts`) and come back together in their order: the token set does not depend on the thread count.
 */
import { domainIndex } from '../domains.js';
import { computeFeatures } from '../data/features/compute.js';
import { trainingInstruments } from '../data/sim/simulator.js';
import type { FeatureSeries } from '../data/types.js';
import type { RegimeFamily } from '../data/sim/regimes.js';
import type { Hidden } from '../router/layout.js';
import { concatSeries } from '../router/batch.js';
import { sharedArray } from '../util/shared-memory.js';
import { PRIORITY, trainingWorkPool } from './work-pool.js';

/** A stretch of a token set's series as the arrays it was made in (`TokenSet.chunks`), with its labels. */
export interface TokenChunk {
  x: Float32Array;
  vol: Float32Array;
  risk: Float32Array;
  labels: Uint8Array;
}

/** Tokens of many tickers, concatenated. */
export interface TokenSet {
  hidden: Hidden;
  x: Float32Array;
  vol: Float32Array;
  risk: Float32Array;
  labels: Uint8Array;
  /** Token ranges per ticker: `[start, end)`. */
  tickers: { ticker: string; label: number; subtype: string; seed: number; family: RegimeFamily; start: number; end: number }[];
  get size(): number;
  /**
   * The series as the arrays they were made in (one per market history or real row), one after another. A set made
   * of such chunks joins x, vol and risk only when they are first read; a trainer that hands the device the chunks
   * (`NativeRouter.setTrainingSet`) never joins them on the host. Absent: the set is its own one chunk.
   */
  readonly chunks?: readonly TokenChunk[];
}

/** The chunks of `set` (its own arrays where it has none). */
export function tokenChunks(set: TokenSet): readonly TokenChunk[] {
  return set.chunks ?? [set];
}

/**
 * A token set over `chunks` (labels and ticker ranges given whole): x, vol and risk are joined from the chunks when
 * first read, into shared memory with `shared` (which pool threads read as it is), and from then on the set is one
 * chunk, its joined arrays, so the chunks' own arrays can go. One chunk is used as it is.
 */
export function chunkedTokenSet(hidden: Hidden, chunks: readonly TokenChunk[], labels: Uint8Array, tickers: TokenSet['tickers'], shared = false): TokenSet {
  const total = labels.length;
  const inChunks = chunks.reduce((n, c) => n + c.vol.length, 0);
  if (inChunks !== total) throw new RangeError(`Expected chunks of ${total} tokens in all (the labels') but received ${inChunks}`);
  let series: TokenChunk | undefined = chunks.length === 1 ? chunks[0] : undefined;
  const joined = (): TokenChunk => {
    if (series !== undefined) return series;
    const { x, vol, risk } = concatSeries(chunks, hidden, shared ? (n) => sharedArray(Float32Array, n) : undefined);
    return (series = { x, vol, risk, labels });
  };
  return {
    hidden,
    labels,
    tickers,
    get x() { return joined().x; },
    get vol() { return joined().vol; },
    get risk() { return joined().risk; },
    get size() { return total; },
    get chunks() { return series !== undefined ? [series] : chunks; },
  };
}

/** What one market history (seed) of a token set holds: its instruments' tokens, concatenated, and their rows. */
export interface SeedTokens {
  seed: number;
  x: Float32Array;
  vol: Float32Array;
  risk: Float32Array;
  rows: { ticker: string; label: number; subtype: string; family: RegimeFamily; days: number }[];
}

/** Options of one seed's simulation (`simulatedTokens` without the seed list). */
export interface SeedTokenOptions {
  tickersPerSubtype: number;
  days: number;
  contextDropout?: number;
  contextInceptionShare?: number;
  standInShare?: number;
  newListingShare?: number;
  volScaleShare?: number;
  volScaleRange?: readonly [number, number];
  volScaleWholeContextOnly?: boolean;
  family: RegimeFamily;
}

/** Simulates one market history's instruments and turns them into tokens with `computeFeatures`. */
export function seedTokens(hidden: Hidden, seed: number, opts: SeedTokenOptions): SeedTokens {
  // Each instrument's features are made as soon as it is simulated, so its bars die young (trainingInstruments): only
  // its tokens and its row are kept.
  const features: Pick<FeatureSeries, 'x' | 'vol' | 'risk'>[] = [];
  const rows: SeedTokens['rows'] = [];
  const instruments = trainingInstruments({
    seed,
    tickersPerSubtype: opts.tickersPerSubtype,
    days: opts.days,
    contextDropout: opts.contextDropout ?? 0,
    contextInceptionShare: opts.contextInceptionShare ?? 0,
    ...(opts.standInShare ? { standInShare: opts.standInShare } : {}),
    newListingShare: opts.newListingShare ?? 0,
    volScaleShare: opts.volScaleShare ?? 0,
    ...(opts.volScaleRange !== undefined ? { volScaleRange: opts.volScaleRange } : {}),
    ...(opts.volScaleWholeContextOnly === true ? { volScaleWholeContextOnly: true } : {}),
    family: opts.family,
  });
  for (const s of instruments) {
    const f = computeFeatures(s.ticker, s.bars, hidden, s.context);
    features.push({ x: f.x, vol: f.vol, risk: f.risk });
    rows.push({ ticker: s.ticker, label: domainIndex(s.class), subtype: s.subtype, family: s.family, days: f.vol.length });
  }
  // In shared memory: the set goes to the threads that train on it (steps.task.ts) and to the feeders without a copy.
  const { x, vol, risk } = concatSeries(features, hidden, (n) => sharedArray(Float32Array, n));
  return { seed, x, vol, risk, rows };
}

/**
 * The token set of several seeds' tokens, in the order given (names get `@seed` when there is more than one, unless
 * `seedNames` is false). Each seed's arrays stay a chunk of the set (`chunkedTokenSet`): they are joined only when
 * the set's series are read.
 */
export function assembleTokens(hidden: Hidden, perSeed: readonly SeedTokens[], { seedNames = perSeed.length > 1 } = {}): TokenSet {
  const total = perSeed.reduce((n, p) => n + p.vol.length, 0);
  const labels = sharedArray(Uint8Array, total);
  const tickers: TokenSet['tickers'] = [];
  const chunks: TokenChunk[] = [];
  let start = 0;
  for (const p of perSeed) {
    const first = start;
    for (const r of p.rows) {
      const end = start + r.days;
      labels.fill(r.label, start, end);
      tickers.push({ ticker: seedNames ? `${r.ticker}@${p.seed}` : r.ticker, label: r.label, subtype: r.subtype, seed: p.seed, family: r.family, start, end });
      start = end;
    }
    if (start - first !== p.vol.length) throw new RangeError(`Expected seed ${p.seed}'s rows to cover its ${p.vol.length} tokens but they cover ${start - first}`);
    chunks.push({ x: p.x, vol: p.vol, risk: p.risk, labels: labels.subarray(first, start) });
  }
  return chunkedTokenSet(hidden, chunks, labels, tickers);
}

export interface SimulatedTokenOptions extends Omit<SeedTokenOptions, 'family'> {
  seeds: number[];
  familyOf?: (seed: number) => RegimeFamily;
}

/**
 * Simulates the instruments of `opts` once per seed (each seed is another market history and other instrument
 * parameters, in the regime family `familyOf(seed)`) and turns them into tokens with `computeFeatures`.
 */
export function simulatedTokens(hidden: Hidden, opts: SimulatedTokenOptions): TokenSet {
  const familyOf = opts.familyOf ?? (() => 'recent');
  return assembleTokens(hidden, opts.seeds.map((seed) => seedTokens(hidden, seed, { ...opts, family: familyOf(seed) })));
}

/**
 * `simulatedTokens` with the seeds spread over the process's pool of `threads` worker threads (`tokens.task.ts`,
 * `trainingWorkPool`), each seed a task of `priority`: the same token set, bit for bit, since each seed is simulated
 * alone and the seeds are put together in their order whichever thread finishes first. One thread (or one seed) runs
 * here without a pool.
 */
export async function simulatedTokensParallel(hidden: Hidden, opts: SimulatedTokenOptions, threads: number, priority: number = PRIORITY.training): Promise<TokenSet> {
  const pool = trainingWorkPool(threads);
  if (pool === undefined || opts.seeds.length <= 1) return simulatedTokens(hidden, opts);
  const familyOf = opts.familyOf ?? (() => 'recent');
  const { seeds, familyOf: _f, ...rest } = opts;
  const perSeed = await Promise.all(seeds.map((seed) => pool.run<SeedTokens>('tokens.task', { hidden, seed, opts: { ...rest, family: familyOf(seed) } } satisfies SeedTokensTask, priority)));
  return assembleTokens(hidden, perSeed);
}

/** Input of `tokens.task.ts`. */
export interface SeedTokensTask {
  hidden: Hidden;
  seed: number;
  opts: SeedTokenOptions;
}
