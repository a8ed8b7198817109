import { fitTemperatureNll, meanNll } from './temperature.js';
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

/** One slice's confidences (shared memory), for the ECE a perfectly calibrated router would show on them. */
export interface NoiseTask {
  conf: Float64Array;
}

/** Piscina task of `calibrate.ts`: for each κ of a run, T fitted with each token read at T·(1 + κ·u), and the NLL
 * there (`kappaChain`); or, given λs, the NLL at each of them (`lambdaNlls`); or a slice's calibration noise
 * (`eceNoise`). */
export default function calibrateTask(task: KappaChainTask | LambdaNllTask | NoiseTask): { temperature: number; nll: number }[] | number[] | CalibrationNoise {
  if ('conf' in task) return eceNoise(task.conf);
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
