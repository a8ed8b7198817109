/**
 * Temperature fits: the temperature T (and, with per-token factors, the history temperature's T·(1 + κ·u)) that
 * minimises the mean NLL of labelled probabilities. Used after training (simulator validation split) and by the
 * calibration on real data, whose fits run on worker threads (`calibrate.task.ts`).
 */
import { DOMAINS } from '../domains.js';

const D = DOMAINS.length;

/**
 * Temperature minimising the mean NLL of `labels` given log-probabilities at T = 1 (`softmax(logp/T)` equals the
 * router's `softmax(clip(s)/T)`, the per-token constant cancels), T in [0.05, 20] (fitTemperatureNll).
 */
export function fitTemperature(probsAtT1: Float32Array, labels: Uint8Array): number {
  return fitTemperatureNll(logProbs(probsAtT1), labels).temperature;
}

/** ln p of every probability (floored at 1e-30), what the temperature fits read; computed once per data set. */
export function logProbs(probs: Float32Array): Float64Array {
  const logp = new Float64Array(probs.length);
  for (let i = 0; i < probs.length; i++) logp[i] = Math.log(Math.max(probs[i]!, 1e-30));
  return logp;
}

/**
 * fitTemperature on log-probabilities at T = 1 (`logProbs`), with the NLL at the optimum; with `factor`, token i is
 * read at T·factor[i] (the history temperature's 1 + κ·u, see src/router/history-temperature.ts) and T is fitted for
 * those factors.
 *
 * In β = 1/T the mean NLL is convex (a log-sum-exp of functions linear in β, minus one linear in β), so a safeguarded
 * Newton iteration on β ∈ [1/20, 1/0.05] finds the minimum in a handful of passes over the data: each pass gives the
 * NLL, its slope (the mean over tokens of E_p[ℓ] − ℓ_label, ℓ = ln p / factor) and its curvature (the mean of
 * Var_p[ℓ]). The slope's sign keeps a bracket; a step that leaves it is replaced by the bracket's midpoint. The
 * result is the minimiser to about 1e-12 (a golden-section search in log T over the same range, 62 passes, agreed
 * with it to that order and chose the same κ on the development folder). The iteration starts at β = `start` (1 unless
 * given; a neighbouring fit's optimum takes fewer passes, `kappaChain`), clamped into the range.
 */
export function fitTemperatureNll(logp: Float64Array, labels: Uint8Array, factor?: Float32Array, start = 1): { temperature: number; nll: number } {
  const at = (beta: number): [number, number, number] => nllAt(logp, labels, factor, beta);
  let lo = 1 / 20;
  let hi = 1 / 0.05;
  let beta = Number.isFinite(start) ? Math.min(Math.max(start, lo), hi) : 1;
  for (let it = 0; it < 100; it++) {
    const [, slope, curv] = at(beta);
    if (slope > 0) hi = beta;
    else if (slope < 0) lo = beta;
    else break;
    let next = curv > 0 ? beta - slope / curv : NaN;
    if (!(next > lo && next < hi)) next = (lo + hi) / 2;
    const done = Math.abs(next - beta) <= 1e-13 * beta || hi - lo <= 1e-13 * beta;
    beta = next;
    if (done) break;
  }
  return { temperature: 1 / beta, nll: at(beta)[0] };
}

/** Mean NLL of `labels` with token i read at T·factor[i] (factor absent: 1), T > 0. */
export function meanNll(logp: Float64Array, labels: Uint8Array, factor: Float32Array | undefined, temperature: number): number {
  return nllAt(logp, labels, factor, 1 / temperature, false)[0];
}

/**
 * NLL, its slope and its curvature in β = 1/T at β, means over the tokens (fitTemperatureNll). The four classes are
 * written out (D = 4): the same operations in the same order as a loop over them, without an array per token, a third
 * faster; the calibration makes about 2,000 such passes over its tokens. Without `moments` the slope and curvature
 * are left at 0 and not computed (meanNll: the λ grid's passes read the NLL alone, the same sum).
 */
function nllAt(logp: Float64Array, labels: Uint8Array, factor: Float32Array | undefined, beta: number, moments = true): [number, number, number] {
  if (D !== 4) throw new RangeError(`Expected 4 domains for nllAt but received ${D}`);
  const n = labels.length;
  let sum = 0;
  let slope = 0;
  let curv = 0;
  for (let i = 0; i < n; i++) {
    const scale = factor === undefined ? 1 : 1 / factor[i]!;
    const b = beta * scale;
    const o = i * 4;
    const l0 = logp[o]!, l1 = logp[o + 1]!, l2 = logp[o + 2]!, l3 = logp[o + 3]!;
    const max = Math.max(Math.max(Math.max(Math.max(-Infinity, l0 * b), l1 * b), l2 * b), l3 * b);
    const e0 = Math.exp(l0 * b - max), e1 = Math.exp(l1 * b - max), e2 = Math.exp(l2 * b - max), e3 = Math.exp(l3 * b - max);
    const z = 0 + e0 + e1 + e2 + e3;
    const ly = logp[o + labels[i]!]! * scale;
    sum += max + Math.log(z) - ly * beta;
    if (!moments) continue;
    const s0 = l0 * scale, s1 = l1 * scale, s2 = l2 * scale, s3 = l3 * scale;
    const p0 = e0 / z, p1 = e1 / z, p2 = e2 / z, p3 = e3 / z;
    const m1 = 0 + p0 * s0 + p1 * s1 + p2 * s2 + p3 * s3;
    const m2 = 0 + p0 * s0 * s0 + p1 * s1 * s1 + p2 * s2 * s2 + p3 * s3 * s3;
    slope += m1 - ly;
    curv += m2 - m1 * m1;
  }
  const k = Math.max(n, 1);
  return [sum / k, slope / k, curv / k];
}
