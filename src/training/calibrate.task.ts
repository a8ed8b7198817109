import { fitTemperatureNll } from './temperature.js';
import { temperatureFactor } from '../router/history-temperature.js';

/** One fit of the calibration's grid: the data of one ticker subset (shared memory) and one history temperature κ. */
export interface KappaFitTask {
  logp: Float64Array;
  labels: Uint8Array;
  shortness: Float32Array;
  kappa: number;
}

/** Piscina task of `calibrate.ts`: T fitted with each token read at T·(1 + κ·u), and the NLL there. */
export default function kappaFit(task: KappaFitTask): { temperature: number; nll: number } {
  return fitTemperatureNll(task.logp, task.labels, calibrationFactors(task.shortness, task.kappa));
}

/** Per-token factors 1 + κ·u (+ λ·c with a shortfall) of the history and context temperatures. */
export function calibrationFactors(shortness: Float32Array, kappa: number, shortfall?: Float32Array, lambda = 0): Float32Array {
  const factor = new Float32Array(shortness.length);
  for (let i = 0; i < shortness.length; i++) factor[i] = temperatureFactor(kappa, shortness[i]!, lambda, shortfall?.[i] ?? 0);
  return factor;
}
