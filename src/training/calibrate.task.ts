import { fitTemperatureNll, meanNll } from './temperature.js';
import { temperatureFactor } from '../router/history-temperature.js';
import { eceNoise, type CalibrationNoise } from './ece-noise.js';

/** One fit of the calibration's grid: the data of one ticker subset (shared memory) and one history temperature κ. */
export interface KappaFitTask {
  logp: Float64Array;
  labels: Uint8Array;
  shortness: Float32Array;
  kappa: number;
}

/** Some context temperatures λ of the grid on one subset's tokens short of context, T and κ fixed: the NLL at each. */
export interface LambdaNllTask extends KappaFitTask {
  shortfall: Float32Array;
  temperature: number;
  lambdas: number[];
}

/** One slice's confidences (shared memory), for the ECE a perfectly calibrated router would show on them. */
export interface NoiseTask {
  conf: Float64Array;
}

/** Piscina task of `calibrate.ts`: T fitted with each token read at T·(1 + κ·u), and the NLL there; or, given λs, the
 * NLL at each of them (`lambdaNlls`); or a slice's calibration noise (`eceNoise`). */
export default function calibrateTask(task: KappaFitTask | LambdaNllTask | NoiseTask): { temperature: number; nll: number } | number[] | CalibrationNoise {
  if ('conf' in task) return eceNoise(task.conf);
  return 'lambdas' in task ? lambdaNlls(task) : kappaFit(task);
}

/** T fitted with each token read at T·(1 + κ·u), and the NLL there. */
export function kappaFit(task: KappaFitTask): { temperature: number; nll: number } {
  return fitTemperatureNll(task.logp, task.labels, calibrationFactors(task.shortness, task.kappa));
}

/** The mean NLL of the tokens read at T·(1 + κ·u + λ·c), for each λ of the task. */
export function lambdaNlls(task: LambdaNllTask): number[] {
  return task.lambdas.map((lambda) => meanNll(task.logp, task.labels, calibrationFactors(task.shortness, task.kappa, task.shortfall, lambda), task.temperature));
}

/** Per-token factors 1 + κ·u (+ λ·c with a shortfall) of the history and context temperatures. */
export function calibrationFactors(shortness: Float32Array, kappa: number, shortfall?: Float32Array, lambda = 0): Float32Array {
  const factor = new Float32Array(shortness.length);
  for (let i = 0; i < shortness.length; i++) factor[i] = temperatureFactor(kappa, shortness[i]!, lambda, shortfall?.[i] ?? 0);
  return factor;
}
