/**
 * Temperature fits: the temperature T (and, with per-token factors, the history temperature's T·(1 + κ·u)) that
 * minimises the mean NLL of labelled probabilities. Used after training (simulator validation split) and by the
 * calibration on real data, whose fits run on worker threads (`calibrate.task.ts`).
 */
import { DOMAINS } from '../domains.js';

const D = DOMAINS.length;

/**
 * Temperature minimising the mean NLL of `labels` given log-probabilities at T = 1 (`softmax(logp/T)` equals the
 * router's `softmax(clip(s)/T)`, the per-token constant cancels). Golden-section search on log T ∈ [log 0.05, log 20].
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
 */
export function fitTemperatureNll(logp: Float64Array, labels: Uint8Array, factor?: Float32Array): { temperature: number; nll: number } {
  const n = labels.length;
  const nll = (logT: number): number => {
    const invT = Math.exp(-logT);
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const inv = factor === undefined ? invT : invT / factor[i]!;
      let max = -Infinity;
      for (let d = 0; d < D; d++) max = Math.max(max, logp[i * D + d]! * inv);
      let z = 0;
      for (let d = 0; d < D; d++) z += Math.exp(logp[i * D + d]! * inv - max);
      sum += max + Math.log(z) - logp[i * D + labels[i]!]! * inv;
    }
    return sum / Math.max(n, 1);
  };
  let lo = Math.log(0.05);
  let hi = Math.log(20);
  const phi = (Math.sqrt(5) - 1) / 2;
  let a = hi - phi * (hi - lo);
  let b = lo + phi * (hi - lo);
  let fa = nll(a);
  let fb = nll(b);
  for (let it = 0; it < 60; it++) {
    if (fa < fb) {
      hi = b;
      b = a;
      fb = fa;
      a = hi - phi * (hi - lo);
      fa = nll(a);
    } else {
      lo = a;
      a = b;
      fa = fb;
      b = lo + phi * (hi - lo);
      fb = nll(b);
    }
  }
  const logT = (lo + hi) / 2;
  return { temperature: Math.exp(logT), nll: nll(logT) };
}
