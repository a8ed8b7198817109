import { fitTemperature, fitTemperatureNll, meanNll } from './temperature.js';
import { averageMemberRows } from '../router/ensemble-mean.js';
import { temperatureFactor } from '../router/history-temperature.js';
import { eceNoise, type CalibrationNoise } from './ece-noise.js';

/** The data of one ticker subset (shared memory) the calibration's fits read. */
interface FitTokens {
  logp: Float64Array;
  labels: Uint8Array;
  shortness: Float32Array;
}

/** A run of neighbouring history temperatures κ of the calibration's grid, T fitted at each (`kappaChain`). */
export interface KappaChainTask extends FitTokens {
  kappas: number[];
}

/** Some context temperatures λ of the grid on one subset's tokens short of context, T and κ fixed: the NLL at each. */
export interface LambdaNllTask extends FitTokens {
  kappa: number;
  shortfall: Float32Array;
  temperature: number;
  lambdas: number[];
}

/** Held-out probabilities at T = 1 and their labels (shared memory), for the temperature fitted on them. */
export interface TemperatureTask {
  probsAtT1: Float32Array;
  labels: Uint8Array;
}

/** Rows [from, to) of an ensemble's mean at `temperature` (`averageMemberRows`), written into `probs` and `assign`
 * (shared memory, every row's). */
export interface AverageTask {
  outs: Float32Array[];
  temperature: number;
  probs: Float32Array;
  assign: Uint8Array;
  from: number;
  to: number;
}

/** One slice's confidences (shared memory), for the ECE a perfectly calibrated router would show on them. */
export interface NoiseTask {
  conf: Float64Array;
}

/** Piscina task of `calibrate.ts` and `pool-scoring.ts`: for each κ of a run, T fitted with each token read at
 * T·(1 + κ·u), and the NLL there (`kappaChain`); or, given λs, the NLL at each of them (`lambdaNlls`); or a slice's
 * calibration noise (`eceNoise`); or a held-out temperature fit (`fitTemperature`); or rows of an ensemble's mean
 * (`averageMemberRows`, written in place). */
export default function calibrateTask(
  task: KappaChainTask | LambdaNllTask | NoiseTask | TemperatureTask | AverageTask,
): { temperature: number; nll: number }[] | number[] | CalibrationNoise | number | null {
  if ('conf' in task) return eceNoise(task.conf);
  if ('probsAtT1' in task) return fitTemperature(task.probsAtT1, task.labels);
  if ('outs' in task) {
    averageMemberRows(task.outs, task.temperature, task, task.from, task.to);
    return null;
  }
  return 'lambdas' in task ? lambdaNlls(task) : kappaChain(task);
}

/**
 * For each κ of the task in order, T fitted with each token read at T·(1 + κ·u), and the NLL there. Each fit after
 * the first starts from the one before's optimum (the optimum moves little from one κ of the grid to the next), so
 * a run of κs takes about half the passes over the tokens of fits started at T = 1; each converges to the same
 * minimiser (to about 1e-12, fitTemperatureNll).
 */
export function kappaChain(task: KappaChainTask): { temperature: number; nll: number }[] {
  let start = 1;
  return task.kappas.map((kappa) => {
    const fit = fitTemperatureNll(task.logp, task.labels, calibrationFactors(task.shortness, kappa), start);
    start = 1 / fit.temperature;
    return fit;
  });
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
