/**
 * History temperature: a short history's token is read at a higher temperature than a full year's.
 *
 * The router's features over 60 bars are far noisier than over 250, and on real series its confidence does not fall
 * as far as its accuracy does (a new listing's first token: 80–90 % right at 0.91 mean confidence). One temperature
 * cannot fix both ends, so the model carries a second calibration scalar κ (`history_temperature`, fitted with T on
 * real labelled data, cross-fitted by ticker folds: src/training/calibrate.ts) and each token's probabilities are
 * taken at T·(1 + κ·u), where u is the token's shortness: 0 with a year of history or more, 1 at 60 bars, about 0.5
 * at 120 (linear in the token's `history_250` feature, ln of the returns it had). Re-tempering is exact, as for T:
 * `softmax(ln p / f)` of probabilities at T equals the router's `softmax(clip(s) / (T·f))`. It never changes a
 * routing decision (the order of a token's probabilities is kept).
 *
 * Context temperature: a token routed without its context series (a source that has none of them, or dates before
 * they existed) is far less often right than one with them (83.5 % against 100 % per ticker, cross-fitted on the
 * development folder) at nearly the same confidence. A third scalar λ (`context_temperature`) adds λ·c to the
 * factor, c being the token's context shortfall: 0 with every context series over its whole window, 1 with none
 * (linear in `ctx_coverage_250`). The factor is 1 + κ·u + λ·c; λ is fitted on the routes with a shortfall only,
 * after T and κ (src/training/calibrate.ts).
 */
import { NUM_DOMAINS as D } from '../domains.js';
import { FEATURE_TABLE } from '../data/features/table.js';

/** Slot of `history_250` in every token (H = 16 and 32). */
export const HISTORY_SLOT = FEATURE_TABLE.findIndex((f) => f.name === 'history_250');

/** Slot of `ctx_coverage_250` in every token (H = 16 and 32). */
export const CONTEXT_SLOT = FEATURE_TABLE.findIndex((f) => f.name === 'ctx_coverage_250');

/** Largest κ (and λ) accepted (at κ = 10 a 60-bar token is read at 11·T, nearly uniform). */
export const HISTORY_TEMPERATURE_MAX = 10;

/** Normalised `history_250` of a token made from 60 bars (59 returns): where the shortness is 1. */
const SIXTY_BARS = ((row) => (Math.log(59 / 250) - row.center) / row.scale)(FEATURE_TABLE[HISTORY_SLOT]!);

/** Normalised `ctx_coverage_250` of a token without any context (coverage 0): where the shortfall is 1. */
const NO_CONTEXT_VALUE = ((row) => (0 - row.center) / row.scale)(FEATURE_TABLE[CONTEXT_SLOT]!);

/** The two scalars of a model that re-temper each token: κ (history) and λ (context); 0 turns either off. */
export interface TokenTemperatures {
  historyTemperature: number;
  contextTemperature: number;
}

/** Whether `k` is a history (or context) temperature a model may carry: a number in [0, HISTORY_TEMPERATURE_MAX]. */
export function isValidHistoryTemperature(k: unknown): k is number {
  return typeof k === 'number' && k >= 0 && k <= HISTORY_TEMPERATURE_MAX;
}

/** Shortness u of each of the `n` tokens of `x` (row-major `[n, hidden]`): 0 from 250 bars, 1 at 60, more below. */
export function tokenShortness(x: Float32Array, hidden: number, n: number = x.length / hidden): Float32Array {
  const u = new Float32Array(n);
  for (let i = 0; i < n; i++) u[i] = Math.max(0, x[i * hidden + HISTORY_SLOT]! / SIXTY_BARS);
  return u;
}

/** Context shortfall c of each of the `n` tokens of `x`: 0 with every context series, 1 with none, in [0, 1]. */
export function tokenShortfall(x: Float32Array, hidden: number, n: number = x.length / hidden): Float32Array {
  const c = new Float32Array(n);
  for (let i = 0; i < n; i++) c[i] = Math.min(1, Math.max(0, x[i * hidden + CONTEXT_SLOT]! / NO_CONTEXT_VALUE));
  return c;
}

/** A token's factor 1 + κ·u + λ·c, the multiple of T it is read at (u its shortness, c its context shortfall). */
export function temperatureFactor(kappa: number, shortness: number, lambda: number, shortfall: number): number {
  return 1 + kappa * shortness + lambda * shortfall;
}

/**
 * Re-tempers `probs` (row-major `[n, 4]`) in place: token i from its temperature to `temperature`·(1 + kappa·
 * shortness[i] + lambda·shortfall[i]) times it, i.e. `softmax(ln p / f)`. Tokens whose factor f is exactly 1 (full histories, when
 * `temperature` is 1) are left bit for bit as they are. With `temperature` T and probabilities taken at T = 1 this is
 * the router's output at T·(1 + κ·u) in one pass (calibration); with the default 1 it adds the history temperature to
 * probabilities already at the model's T (route worker, evaluate).
 */
export function temperByHistory(
  probs: Float32Array,
  shortness: Float32Array,
  kappa: number,
  temperature = 1,
  shortfall?: Float32Array,
  lambda = 0,
): Float32Array {
  const row = new Float64Array(D);
  for (let i = 0; i < shortness.length; i++) {
    const f = temperature * temperatureFactor(kappa, shortness[i]!, lambda, shortfall?.[i] ?? 0);
    if (f === 1) continue;
    for (let d = 0; d < D; d++) row[d] = probs[i * D + d]!;
    temperRow(row, 1 / f);
    for (let d = 0; d < D; d++) probs[i * D + d] = row[d]!;
  }
  return probs;
}

/**
 * One token's `D` probabilities (or any positive weights) in `row`, replaced in place, in float64, by
 * `softmax(ln row · inv)`: the same probabilities read at 1/inv times their temperature. Values are floored at 1e-30
 * before the log. The one re-tempering step of the history temperature and of an ensemble's mean
 * (src/router/ensemble.ts).
 */
export function temperRow(row: Float64Array, inv: number): void {
  let max = -Infinity;
  for (let d = 0; d < D; d++) {
    row[d] = Math.log(Math.max(row[d]!, 1e-30)) * inv;
    if (row[d]! > max) max = row[d]!;
  }
  let z = 0;
  for (let d = 0; d < D; d++) z += (row[d] = Math.exp(row[d]! - max));
  for (let d = 0; d < D; d++) row[d] = row[d]! / z;
}

/**
 * The history and context temperatures for a routed batch: `probs` of the `n` tokens of `x` (at the model's T)
 * re-tempered in place; with both 0 nothing is computed. What the route worker and the forwarder call after each
 * forward.
 */
export function temperBatchByHistory(probs: Float32Array, x: Float32Array, hidden: number, t: TokenTemperatures, n: number = x.length / hidden): Float32Array {
  if (t.historyTemperature === 0 && t.contextTemperature === 0) return probs;
  const shortfall = t.contextTemperature === 0 ? undefined : tokenShortfall(x, hidden, n);
  return temperByHistory(probs, tokenShortness(x, hidden, n), t.historyTemperature, 1, shortfall, t.contextTemperature);
}
