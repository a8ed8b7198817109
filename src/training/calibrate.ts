/**
 * Temperature calibration on real labelled data, with an honest estimate of how well it transfers.
 *
 * A temperature fitted on the simulator leaves the router over-confident on real series (a simulator is cleaner
 * than any market), so the shipped temperature is fitted on a real labelled folder. One scalar cannot memorise
 * tickers, but scoring it on the tickers it was fitted on would still flatter it: the reported calibration is
 * cross-fitted, k folds split by ticker, each fold scored with the temperature fitted on the other folds.
 * Routing decisions (the argmax) do not depend on the temperature, so accuracy is unchanged by this step.
 */
import { DOMAINS } from '../domains.js';
import type { Hidden } from '../router/layout.js';
import { createForwarder } from './forwarder.js';
import { calibrationNoise, confidences, loadLabelledDirectory, routeLabelled, summarisePredictions, type CalibrationNoise, type EvaluateOptions, type EvaluationMetrics, type TickerPrediction } from './evaluate.js';
import { logProbs } from './temperature.js';
import { kappaChain, lambdaNlls, type KappaChainTask, type LambdaNllTask, type NoiseTask } from './calibrate.task.js';
import { trainingWorkPool } from './work-pool.js';
import { sharedArray, sharedCopy } from '../util/shared-memory.js';
import { temperByHistory } from '../router/history-temperature.js';

const D = DOMAINS.length;

export interface CalibrationResult {
  /** Temperature fitted on every ticker: the one to ship. */
  temperature: number;
  /** History temperature κ fitted with it (src/router/history-temperature.ts). */
  historyTemperature: number;
  /** Temperature fitted without fold k, for k = 0 … folds − 1. */
  foldTemperatures: number[];
  /** History temperature fitted without fold k. */
  foldHistoryTemperatures: number[];
  /** Context temperature λ fitted with them (0 when every token had its context). */
  contextTemperature: number;
  /** Context temperature fitted without fold k. */
  foldContextTemperatures: number[];
  folds: number;
  tickers: number;
  days: number;
  /** Metrics of the cross-fitted probabilities (each ticker scored with a temperature that never saw it). */
  crossFitted: EvaluationMetrics;
  /** Metrics with the temperature the model had before (for comparison). */
  before: EvaluationMetrics;
}

/** The κ grid the history temperature is chosen from (T is fitted for each). */
const KAPPA_GRID = Array.from({ length: 31 }, (_, i) => i * 0.1);

/** Neighbouring κs of the grid fitted one after another on a thread, each from the one before's T (`kappaChain`). */
const KAPPA_CHAIN = 8;

/** The λ grid the context temperature is chosen from (T and κ fixed). */
const LAMBDA_GRID = Array.from({ length: 121 }, (_, i) => i * 0.05);

/** Tokens with a context shortfall below this fit T and κ; λ is fitted on every token with a shortfall. */
export const FULL_CONTEXT_SHORTFALL = 0.1;

/** The three calibration scalars: each token is read at T·(1 + κ·u + λ·c) (src/router/history-temperature.ts). */
export interface Calibration {
  temperature: number;
  kappa: number;
  lambda: number;
}

/** What the fits of one ticker subset read: ln p at T = 1, labels, shortness and shortfall per day, in shared memory. */
interface FitData {
  logp: Float64Array;
  labels: Uint8Array;
  shortness: Float32Array;
  shortfall: Float32Array;
}

/**
 * ln p of a prediction's probabilities (`logProbs`), made once per probability array: the fits of a cross-fit read the
 * same predictions in up to six subsets (each fold's fit and the shipped one), and ln p of a token does not depend on
 * the subset, so each is taken once (on the thread that makes the fits' data, which the last fold's fits wait for).
 */
const logpOf = new WeakMap<Float32Array, Float64Array>();
function cachedLogProbs(probs: Float32Array): Float64Array {
  let logp = logpOf.get(probs);
  if (logp === undefined) logpOf.set(probs, (logp = logProbs(probs)));
  return logp;
}

/** The fit data of the tokens of `preds` that `keep(shortfall)` selects. */
function fitData(preds: readonly TickerPrediction[], keep: (c: number) => boolean): FitData {
  let n = 0;
  for (const p of preds) for (let i = 0; i < p.assign.length; i++) if (keep(p.shortfall?.[i] ?? 0)) n++;
  const out = { logp: sharedArray(Float64Array, n * D), labels: sharedArray(Uint8Array, n), shortness: sharedArray(Float32Array, n), shortfall: sharedArray(Float32Array, n) };
  let j = 0;
  for (const p of preds) {
    const logp = cachedLogProbs(p.probs);
    for (let i = 0; i < p.assign.length; i++) {
      const c = p.shortfall?.[i] ?? 0;
      if (!keep(c)) continue;
      out.logp.set(logp.subarray(i * D, (i + 1) * D), j * D);
      out.labels[j] = p.label;
      out.shortness[j] = p.shortness?.[i] ?? 0;
      out.shortfall[j] = c;
      j++;
    }
  }
  return out;
}

/** `calibrationNoise` of each set of predictions (evaluate.ts), on the process's pool of `threads` worker threads
 * (`calibrate.task.ts`), one set a task: the same numbers as in place. */
export async function noiseAll(sets: readonly (readonly TickerPrediction[])[], threads: number): Promise<CalibrationNoise[]> {
  const pool = trainingWorkPool(threads);
  return Promise.all(
    sets.map((preds) => {
      if (pool === undefined) return calibrationNoise(preds);
      const task: NoiseTask = { conf: sharedCopy(confidences(preds)) };
      return pool.run<CalibrationNoise>('calibrate.task', task);
    }),
  );
}

/**
 * T, κ and λ minimising the NLL of each subset's predictions (probabilities at T = 1, each token read at
 * T·(1 + κ·u + λ·c)), in two blocks. T and κ on the tokens with (nearly) their whole context (shortfall below
 * FULL_CONTEXT_SHORTFALL): one fit of T per κ of the grid (fitTemperatureNll), the first κ with the lowest NLL
 * winning. Then λ, T and κ fixed, on every token with a shortfall: the first λ of its grid with the lowest NLL, the
 * exact optimum of the whole NLL in λ given T and κ (the other tokens do not depend on it). Routes without context
 * thus never move the T of routes with it. The κ fits, in runs of neighbours (`kappaChain`), and the NLLs of the λ
 * grid are independent, so they run on the process's pool of `threads` worker threads (`calibrate.task.ts` on
 * work-pool.ts, a few λs a task) over the subsets' data in shared memory, each subset's λs as soon as its T and κ
 * are fitted; the result is the same for any thread count.
 */
export async function fitAll(subsets: readonly (readonly TickerPrediction[])[], threads: number): Promise<Calibration[]> {
  const pool = trainingWorkPool(threads);
  const run = <T>(task: KappaChainTask | LambdaNllTask, here: () => T): Promise<T> => (pool !== undefined ? pool.run<T>('calibrate.task', task) : Promise.resolve(here()));
  // λs per task: enough tasks to fill the threads, few enough that each does real work.
  const chunk = Math.max(1, Math.ceil(LAMBDA_GRID.length / Math.max(1, threads)));
  const runs = <T>(grid: readonly T[], size: number): T[][] => Array.from({ length: Math.ceil(grid.length / size) }, (_, i) => grid.slice(i * size, (i + 1) * size));
  return Promise.all(
    subsets.map(async (s) => {
      const full = fitData(s, (c) => c < FULL_CONTEXT_SHORTFALL);
      const perKappa = (await Promise.all(runs(KAPPA_GRID, KAPPA_CHAIN).map((kappas) => {
        const task: KappaChainTask = { ...full, kappas };
        return run(task, () => kappaChain(task));
      }))).flat();
      let best = { temperature: 1, kappa: 0, nll: Infinity };
      perKappa.forEach((f, k) => {
        if (f.nll < best.nll) best = { ...f, kappa: KAPPA_GRID[k]! };
      });
      const { temperature, kappa } = best;
      const short = fitData(s, (c) => c > 0);
      let lambda = 0;
      if (short.labels.length > 0) {
        const nlls = (await Promise.all(runs(LAMBDA_GRID, chunk).map((lambdas) => {
          const task: LambdaNllTask = { ...short, kappa, temperature, lambdas };
          return run(task, () => lambdaNlls(task));
        }))).flat();
        let bestNll = Infinity;
        nlls.forEach((nll, i) => {
          if (nll < bestNll) (bestNll = nll), (lambda = LAMBDA_GRID[i]!);
        });
      }
      return { temperature, kappa, lambda };
    }),
  );
}

/** Probabilities of `p` at T·(1 + κ·u + λ·c) from its probabilities at T = 1. */
export function atCalibration(p: TickerPrediction, c: { temperature: number; kappa: number; lambda?: number }): TickerPrediction {
  const none = new Float32Array(p.assign.length);
  return { ...p, probs: temperByHistory(p.probs.slice(), p.shortness ?? none, c.kappa, c.temperature, p.shortfall ?? none, c.lambda ?? 0) };
}

/**
 * Fits the temperature of `model` on a labelled csv folder (see evaluate's options) and cross-fits it over
 * `folds` ticker folds (ticker i, in sorted order, is in fold i mod folds).
 */
export async function calibrateOnLabelled(
  model: { hidden: Hidden; params: Float32Array; members?: readonly Float32Array[]; temperature: number },
  opts: Pick<EvaluateOptions, 'dataDir' | 'labelsFile' | 'contextDir' | 'warn'> & {
    folds?: number;
    /** Worker threads for the temperature fits (the result is the same for any count). @defaultValue 1 */
    threads?: number;
  },
): Promise<CalibrationResult> {
  const folds = opts.folds ?? 5;
  if (!Number.isInteger(folds) || folds < 2) throw new RangeError(`Expected integer ≥ 2 for folds but received ${String(folds)}`);
  const dir = await loadLabelledDirectory(opts, model.hidden);
  const forwarder = createForwarder({ ...model, temperature: 1 }, opts.warn ? { warn: opts.warn } : {});
  let atT1: TickerPrediction[];
  try {
    atT1 = await routeLabelled(forwarder, model.hidden, dir.items);
  } finally {
    forwarder.close();
  }
  atT1.sort((a, b) => (a.ticker < b.ticker ? -1 : a.ticker > b.ticker ? 1 : 0));
  if (atT1.length < folds) throw new RangeError(`Expected at least ${folds} labelled tickers to cross-fit over ${folds} folds but received ${atT1.length}`);
  // The fold fits and the fit on every ticker, all at once.
  const fitted = await fitAll([...Array.from({ length: folds }, (_, k) => atT1.filter((_, i) => i % folds !== k)), atT1], opts.threads ?? 1);
  const fits = fitted.slice(0, folds);
  const all = fitted[folds]!;
  const crossFitted = atT1.map((p, i) => atCalibration(p, fits[i % folds]!));
  return {
    temperature: all.temperature,
    historyTemperature: all.kappa,
    foldTemperatures: fits.map((f) => f.temperature),
    foldHistoryTemperatures: fits.map((f) => f.kappa),
    contextTemperature: all.lambda,
    foldContextTemperatures: fits.map((f) => f.lambda),
    folds,
    tickers: atT1.length,
    days: atT1.reduce((a, p) => a + p.assign.length, 0),
    crossFitted: summarisePredictions(crossFitted),
    before: summarisePredictions(atT1.map((p) => atCalibration(p, { temperature: model.temperature, kappa: 0 }))),
  };
}
