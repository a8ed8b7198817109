/**
 * Training and evaluation tokens from the simulator: each seed is one market history whose instruments are simulated
 * and turned into tokens by the pipeline's feature function. Seeds are independent, so they spread over worker
 * threads (`tokens.task.ts`) and come back together in their order: the token set does not depend on the thread count.
 */
import { domainIndex } from '../domains.js';
import { computeFeatures } from '../data/features/compute.js';
import { trainingSet } from '../data/sim/simulator.js';
import type { RegimeFamily } from '../data/sim/regimes.js';
import type { Hidden } from '../router/layout.js';
import { concatSeries } from '../router/batch.js';
import { createTaskPool, siblingTaskFile } from '../util/task-pool.js';

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
  newListingShare?: number;
  volScaleShare?: number;
  volScaleRange?: readonly [number, number];
  volScaleWholeContextOnly?: boolean;
  family: RegimeFamily;
}

/** Simulates one market history's instruments and turns them into tokens with `computeFeatures`. */
export function seedTokens(hidden: Hidden, seed: number, opts: SeedTokenOptions): SeedTokens {
  const series = trainingSet({
    seed,
    tickersPerSubtype: opts.tickersPerSubtype,
    days: opts.days,
    contextDropout: opts.contextDropout ?? 0,
    contextInceptionShare: opts.contextInceptionShare ?? 0,
    newListingShare: opts.newListingShare ?? 0,
    volScaleShare: opts.volScaleShare ?? 0,
    ...(opts.volScaleRange !== undefined ? { volScaleRange: opts.volScaleRange } : {}),
    ...(opts.volScaleWholeContextOnly === true ? { volScaleWholeContextOnly: true } : {}),
    family: opts.family,
  }).map((s) => ({ s, f: computeFeatures(s.ticker, s.bars, hidden, s.context) }));
  const { x, vol, risk } = concatSeries(series.map(({ f }) => f), hidden);
  const rows = series.map(({ s, f }) => ({ ticker: s.ticker, label: domainIndex(s.class), subtype: s.subtype, family: s.family, days: f.vol.length }));
  return { seed, x, vol, risk, rows };
}

/** The token set of several seeds' tokens, in the order given (names get `@seed` when there is more than one). */
export function assembleTokens(hidden: Hidden, perSeed: readonly SeedTokens[]): TokenSet {
  const { x, vol, risk } = concatSeries(perSeed, hidden);
  const total = vol.length;
  const labels = new Uint8Array(total);
  const tickers: TokenSet['tickers'] = [];
  let start = 0;
  for (const p of perSeed) {
    for (const r of p.rows) {
      const end = start + r.days;
      labels.fill(r.label, start, end);
      tickers.push({ ticker: perSeed.length > 1 ? `${r.ticker}@${p.seed}` : r.ticker, label: r.label, subtype: r.subtype, seed: p.seed, family: r.family, start, end });
      start = end;
    }
  }
  return { hidden, x, vol, risk, labels, tickers, get size() { return total; } };
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
 * `simulatedTokens` with the seeds spread over `threads` worker threads (`tokens.task.ts`): the same token set, bit for
 * bit, since each seed is simulated alone and the seeds are put together in their order whichever thread finishes
 * first. One thread (or one seed) runs here without a pool.
 */
export async function simulatedTokensParallel(hidden: Hidden, opts: SimulatedTokenOptions, threads: number): Promise<TokenSet> {
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`Expected integer ≥ 1 for threads but received ${String(threads)}`);
  if (threads === 1 || opts.seeds.length <= 1) return simulatedTokens(hidden, opts);
  const familyOf = opts.familyOf ?? (() => 'recent');
  const pool = createTaskPool({ filename: siblingTaskFile(import.meta.url, 'tokens.task'), maxThreads: Math.min(threads, opts.seeds.length) });
  try {
    const { seeds, familyOf: _f, ...rest } = opts;
    const perSeed = await Promise.all(seeds.map((seed) => pool.run({ hidden, seed, opts: { ...rest, family: familyOf(seed) } } satisfies SeedTokensTask) as Promise<SeedTokens>));
    return assembleTokens(hidden, perSeed);
  } finally {
    await pool.destroy();
  }
}

/** Input of `tokens.task.ts`. */
export interface SeedTokensTask {
  hidden: Hidden;
  seed: number;
  opts: SeedTokenOptions;
}
