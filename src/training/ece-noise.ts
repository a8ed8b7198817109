/**
 * The ECE a perfectly calibrated router would show on given confidences (`calibrationNoise`, evaluate.ts): the
 * arithmetic alone, with no other import, so that the calibration's worker threads (`calibrate.task.ts`) run it too.
 */
import { Rng } from '../util/random.js';

/** Bins of the expected calibration error (`summarisePredictions` bins the same way). */
export const ECE_BINS = 10;

/** How far the ECE of a perfectly calibrated router would stray on the same tokens (`calibrationNoise`). */
export interface CalibrationNoise {
  /** Median and 90th percentile of that ECE over the draws. */
  median: number;
  p90: number;
}

/** Each token's confidence kept, whether it was right drawn with exactly that probability (`Rng(1)`, `draws` times),
 * binned by confidence: the median and 90th percentile of the ECE over the draws. */
export function eceNoise(conf: ArrayLike<number>, draws = 100): CalibrationNoise {
  const n = conf.length;
  if (n === 0) return { median: 0, p90: 0 };
  const rng = new Rng(1);
  const eces: number[] = [];
  const binConf = new Float64Array(ECE_BINS);
  const binCorrect = new Float64Array(ECE_BINS);
  for (let r = 0; r < draws; r++) {
    binConf.fill(0);
    binCorrect.fill(0);
    for (let i = 0; i < n; i++) {
      const c = conf[i]!;
      const bin = Math.min(ECE_BINS - 1, Math.floor(c * ECE_BINS));
      binConf[bin]! += c;
      if (rng.next() < c) binCorrect[bin]! += 1;
    }
    let ece = 0;
    for (let b = 0; b < ECE_BINS; b++) ece += Math.abs(binCorrect[b]! - binConf[b]!) / n;
    eces.push(ece);
  }
  eces.sort((a, b) => a - b);
  const at = (q: number) => eces[Math.min(draws - 1, Math.floor(q * draws))]!;
  return { median: at(0.5), p90: at(0.9) };
}
