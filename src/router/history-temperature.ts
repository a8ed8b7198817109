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
 */
import { NUM_DOMAINS as D } from '../domains.js';
import { FEATURE_TABLE } from '../data/features/table.js';

/** Slot of `history_250` in every token (H = 16 and 32). */
export const HISTORY_SLOT = FEATURE_TABLE.findIndex((f) => f.name === 'history_250');

/** Largest κ accepted (at κ = 10 a 60-bar token is read at 11·T, nearly uniform). */
export const HISTORY_TEMPERATURE_MAX = 10;

/** Normalised `history_250` of a token made from 60 bars (59 returns): where the shortness is 1. */
const SIXTY_BARS = ((row) => (Math.log(59 / 250) - row.center) / row.scale)(FEATURE_TABLE[HISTORY_SLOT]!);

/** Whether `k` is a history temperature a model may carry: a number in [0, HISTORY_TEMPERATURE_MAX]. */
export function isValidHistoryTemperature(k: unknown): k is number {
  return typeof k === 'number' && k >= 0 && k <= HISTORY_TEMPERATURE_MAX;
}

/** Shortness u of each of the `n` tokens of `x` (row-major `[n, hidden]`): 0 from 250 bars, 1 at 60, more below. */
export function tokenShortness(x: Float32Array, hidden: number, n: number = x.length / hidden): Float32Array {
  const u = new Float32Array(n);
  for (let i = 0; i < n; i++) u[i] = Math.max(0, x[i * hidden + HISTORY_SLOT]! / SIXTY_BARS);
  return u;
}

/**
 * Re-tempers `probs` (row-major `[n, 4]`) in place: token i from its temperature to `temperature`·(1 + kappa·
 * shortness[i]) times it, i.e. `softmax(ln p / f)`. Tokens whose factor f is exactly 1 (full histories, when
 * `temperature` is 1) are left bit for bit as they are. With `temperature` T and probabilities taken at T = 1 this is
 * the router's output at T·(1 + κ·u) in one pass (calibration); with the default 1 it adds the history temperature to
 * probabilities already at the model's T (route worker, evaluate).
 */
export function temperByHistory(probs: Float32Array, shortness: Float32Array, kappa: number, temperature = 1): Float32Array {
  const row = new Float64Array(D);
  for (let i = 0; i < shortness.length; i++) {
    const f = temperature * (1 + kappa * shortness[i]!);
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
 * The history temperature for a routed batch: `probs` of the `n` tokens of `x` (at the model's T) re-tempered in
 * place; with `kappa` 0 nothing is computed. What the route worker and the forwarder call after each forward.
 */
export function temperBatchByHistory(probs: Float32Array, x: Float32Array, hidden: number, kappa: number, n: number = x.length / hidden): Float32Array {
  return kappa === 0 ? probs : temperByHistory(probs, tokenShortness(x, hidden, n), kappa);
}
