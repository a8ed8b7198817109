/**
 * Cross-fitting over a real labelled folder that also trains the router (`TrainConfig.data.real`, real-tokens.ts).
 *
 * The folder's tickers are split into k folds (ticker i, in sorted order, in fold i mod k, as the calibration's
 * folds). For each fold a router (or an ensemble) is trained with that fold's tickers left out of its real data and
 * scores only that fold's tickers, on every slice asked for (all bars, a listing's first N, the last N). Every
 * prediction is thus out of fold: no ticker is scored by a router that saw its bars. The temperature and history
 * temperature to ship are fitted on those out-of-fold predictions, every slice's pooled (so a listing's first bars
 * weigh in as their own slices, not only as the first days of long series), over all tickers; the calibration
 * reported is itself cross-fitted: fold k's tickers are read at the T and κ fitted on the other folds' predictions.
 */
import path from 'node:path';
import { minHistoryBars } from '../config.js';
import { atCalibration, fitAll, noiseAll, type Calibration } from './calibrate.js';
import type { ContextName } from '../data/features/context.js';
import { trainMemberParams } from './ensemble.js';
import { EvaluationError, loadLabelledDirectory, type LabelledDirectory, metricsByYear, type CalibrationNoise, routeLabelled, summarisePredictions, wrongTickers, type EvaluationMetrics, type TickerPrediction, type YearMetrics } from './evaluate.js';
import { createForwarder } from './forwarder.js';
import type { FeaturesTask, SliceOutcome } from './features.task.js';
import { PRIORITY, trainingWorkPool } from './work-pool.js';
import type { TrainConfig, TrainHooks } from './train.js';

/** One way of cutting each ticker's bars: all of them, its first `maxBars`, its last `lastBars`, or every stretch of `windowBars`. */
export interface CrossFitSlice {
  name: string;
  maxBars?: number;
  lastBars?: number;
  windowBars?: number;
  /**
   * The context series the slice is routed with (the others read as missing): `[]` none (a source that has none),
   * `['equity', 'rates']` what a source before 2004 has. @defaultValue every series of the folder
   */
  context?: readonly ContextName[];
  /** false: reported only, its predictions left out of the calibration's fit. @defaultValue true */
  calibrate?: boolean;
}

/**
 * The slices `npm run train -- --real-data` reports: every bar, a listing's first and last 60 / 120 / 250, every
 * stretch of 60 and 120 bars (one token a month per ticker: the short histories' calibration over thousands of
 * tokens, where the first and last 60 bars give one token per ticker), and every bar with part or none of the context.
 */
export const DEFAULT_SLICES: readonly CrossFitSlice[] = [
  { name: 'all' },
  ...[60, 120, 250].map((n) => ({ name: `first ${n}`, maxBars: n })),
  ...[60, 120, 250].map((n) => ({ name: `last ${n}`, lastBars: n })),
  ...[60, 120].map((n) => ({ name: `windows ${n}`, windowBars: n })),
  // Routes with part or none of the context: they fit the context temperature λ (calibrate.ts), not T or κ.
  { name: 'SPY+IEF only', context: ['equity', 'rates'] },
  { name: 'no context', context: [] },
  // What a source before mid-2002 has (SPY listed 1993, IEF 2002-07): reported only, so λ stays fitted as before.
  { name: 'SPY only', context: ['equity'], calibrate: false },
];

export interface CrossFitResult {
  folds: number;
  /** Tickers of each fold. */
  foldTickers: string[][];
  /** T, κ and λ fitted on every out-of-fold prediction (all slices pooled): those to ship with a router trained on every ticker. */
  temperature: number;
  historyTemperature: number;
  contextTemperature: number;
  /** T, κ and λ fitted without fold k. */
  foldCalibration: Calibration[];
  /** Cross-fitted metrics per slice (out-of-fold routers, out-of-fold calibration), and the ECE noise on its tokens. */
  slices: { slice: CrossFitSlice; metrics: EvaluationMetrics; eceNoise: CalibrationNoise }[];
  /** The `all` slice per calendar year of the token dates. */
  byYear: YearMetrics[];
  /** Out-of-fold predictions of the `all` slice, calibrated as reported. */
  predictions: TickerPrediction[];
  /** Out-of-fold predictions of every slice (in `slices` order) at T = 1, before any calibration. */
  atT1: TickerPrediction[][];
  seconds: number;
}

export interface CrossFitOptions {
  /** The recipe; `data.real` names the folder (its `exclude` is set per fold). */
  config: TrainConfig;
  /** One seed: single routers; more: an ensemble per fold (`trainEnsemble`). @defaultValue `[config.seed]` */
  seeds?: readonly number[];
  folds: number;
  slices?: readonly CrossFitSlice[];
  /** Worker threads of the slices' features and of the calibration's fits. @defaultValue config.simThreads ?? config.threads */
  threads?: number;
  /**
   * Folds trained at once. Each fold's routers are independent of the others' (their data, initialisation and
   * batches come from their own seeds and fold), so any value gives the same routers and figures; above 1 it pays
   * where one router leaves the machine idle (the GPU's small training kernels, the feeder threads), not on a CPU
   * whose threads one router already fills. Log lines then carry a `[fold k]` prefix. @defaultValue 1
   */
  concurrency?: number;
  hooks?: TrainHooks;
  /**
   * Aborted: no further fold, or fold member, starts; those training finish, then the cross-fit rejects with the
   * signal's reason (a caller that trains other routers beside it and saw them fail).
   */
  signal?: AbortSignal;
}

const byTicker = (a: { ticker: string }, b: { ticker: string }) => (a.ticker < b.ticker ? -1 : a.ticker > b.ticker ? 1 : 0);

/** Trains `folds` routers (or ensembles) and scores each on the real tickers it did not see (module comment). */
export async function crossFit(opts: CrossFitOptions): Promise<CrossFitResult> {
  const t0 = performance.now();
  const { config, folds } = opts;
  const real = config.data.real;
  if (real === undefined) throw new RangeError('Expected data.real (a labelled folder) to cross-fit over but received none');
  if (!Number.isInteger(folds) || folds < 2) throw new RangeError(`Expected integer ≥ 2 for folds but received ${String(folds)}`);
  const seeds = opts.seeds ?? [config.seed];
  const slices = opts.slices ?? DEFAULT_SLICES;
  const log = opts.hooks?.log ?? (() => undefined);
  const warn = opts.hooks?.warn ?? log;
  const dirOpts = {
    dataDir: real.dataDir,
    ...(real.labelsFile !== undefined ? { labelsFile: real.labelsFile } : {}),
    ...(real.contextDir !== undefined ? { contextDir: real.contextDir } : {}),
    minBars: minHistoryBars(),
  };
  const concurrency = opts.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`Expected integer ≥ 1 for concurrency but received ${String(concurrency)}`);
  // Each slice's features once, for every ticker, on worker threads (the calling thread stays free for the routers'
  // training calls); a fold routes its own rows. The folds are cut from the first slice's tickers (every bar), so it
  // comes first; the others are made while the folds train, and read only once a fold has trained.
  const threads = opts.threads ?? config.simThreads ?? config.threads;
  const pool = trainingWorkPool(threads);
  const loadSlice = async (s: CrossFitSlice, priority: number): Promise<LabelledDirectory['items']> => {
    const sliceOpts = {
      ...dirOpts,
      ...(s.maxBars !== undefined ? { maxBars: s.maxBars } : {}),
      ...(s.lastBars !== undefined ? { lastBars: s.lastBars } : {}),
      ...(s.windowBars !== undefined ? { windowBars: s.windowBars } : {}),
      ...(s.context !== undefined ? { keepContext: s.context } : {}),
    };
    let dir: LabelledDirectory;
    if (pool === undefined) dir = await loadLabelledDirectory(sliceOpts, config.hidden);
    else {
      const out = await pool.run<SliceOutcome>('features.task', { kind: 'slice', opts: sliceOpts, hidden: config.hidden } satisfies FeaturesTask, priority);
      if ('error' in out) throw new EvaluationError(out.error.code, out.error.message);
      dir = out.dir;
    }
    return dir.items.slice().sort((a, b) => byTicker(a.series, b.series));
  };
  // On the process's pool (work-pool.ts) the first slice goes before any other task (no fold starts without it), the
  // others after every router's training data and before the held-out sets: the folds' routing and the calibration
  // after it end the command, and the held-out sets are read by each router in turn as its steps end.
  const first = loadSlice(slices[0]!, PRIORITY.urgent);
  const rest = slices.slice(1).map((s) => first.then(() => loadSlice(s, PRIORITY.slices)));
  const sliceItems = Promise.all([first, ...rest]);
  sliceItems.catch(() => undefined); // read below; a failure surfaces there
  const settled = () => Promise.allSettled([first, ...rest]);
  let tickers: string[];
  try {
    tickers = (await first).map((it) => it.series.ticker);
  } catch (e) {
    await settled();
    throw e;
  }
  if (tickers.length < folds) {
    await settled();
    throw new RangeError(`Expected at least ${folds} labelled tickers in ${real.dataDir} to cross-fit over ${folds} folds but received ${tickers.length}`);
  }
  const foldTickers = Array.from({ length: folds }, (_, k) => tickers.filter((_, i) => i % folds === k));
  // Each fold's out-of-fold predictions per slice, gathered in fold order whatever order the folds finish in.
  const foldOof: TickerPrediction[][][] = [];
  // The calibration's fits (calibrate.ts), fold k's (T, κ and λ without its tickers) started as soon as every other
  // fold's predictions are in, while fold k may still train; the one shipped (every ticker) once all are. Each reads
  // the pooled predictions of the slices it calibrates on, slice by slice in ticker order: the tokens, in the order,
  // of the pool of every fold with fold k's tickers taken out.
  const fits: (Promise<Calibration> | undefined)[] = new Array<Promise<Calibration> | undefined>(folds + 1).fill(undefined);
  const sliceOof = (i: number, except = -1): TickerPrediction[] => foldTickers.flatMap((_, j) => (j === except ? [] : foldOof[j]![i]!)).sort(byTicker);
  const pooledWithout = (except: number): TickerPrediction[] => slices.flatMap((s, i) => (s.calibrate === false ? [] : sliceOof(i, except)));
  const startFits = (): void => {
    for (let k = 0; k <= folds; k++) {
      if (fits[k] !== undefined || foldTickers.some((_, j) => j !== k && foldOof[j] === undefined)) continue;
      const fit = fitAll([pooledWithout(k)], threads).then(([c]) => c!);
      fit.catch(() => undefined); // awaited below; a failure surfaces there
      fits[k] = fit;
    }
  };
  const runFold = async (k: number): Promise<void> => {
    const tag = concurrency > 1 ? `[fold ${k + 1}] ` : '';
    const hooks: TrainHooks = { ...opts.hooks, log: (m) => log(tag + m), warn: (m) => warn(tag + m) };
    log(`fold ${k + 1} of ${folds}: ${foldTickers[k]!.length} tickers left out of training (${foldTickers[k]!.join(' ')})`);
    const foldConfig: TrainConfig = { ...config, data: { ...config.data, real: { ...real, exclude: foldTickers[k]! } } };
    // Only the fold routers' parameters are read: their held-out simulator figures would go nowhere.
    const members = await trainMemberParams(foldConfig, seeds, hooks, opts.signal);
    const forwarder = createForwarder({ hidden: config.hidden, params: members[0]!, members, temperature: 1 }, { warn });
    try {
      const held = new Set(foldTickers[k]!);
      const perSlice: TickerPrediction[][] = [];
      const r0 = performance.now();
      const all = await sliceItems;
      const r1 = performance.now();
      for (const items of all) perSlice.push(await routeLabelled(forwarder, config.hidden, items.filter((it) => held.has(it.series.ticker))));
      log(`fold ${k + 1}: routed on ${all.length} slices in ${((performance.now() - r1) / 1000).toFixed(2)} s${r1 - r0 >= 10 ? ` (their features ${((r1 - r0) / 1000).toFixed(2)} s later)` : ''}`);
      foldOof[k] = perSlice;
      startFits();
    } finally {
      forwarder.close();
    }
  };
  let next = 0;
  let failed = false;
  const lanes = await Promise.allSettled(
    Array.from({ length: Math.min(concurrency, folds) }, async () => {
      while (!failed && next < folds) {
        opts.signal?.throwIfAborted();
        const k = next++;
        try {
          await runFold(k);
        } catch (e) {
          failed = true; // no further fold starts; the running ones finish, then a failed fold's error is thrown
          throw e;
        }
      }
    }),
  );
  await settled();
  for (const lane of lanes) if (lane.status === 'rejected') throw lane.reason;
  await sliceItems; // a slice that failed after every fold did too
  const oof: TickerPrediction[][] = slices.map((_, i) => sliceOof(i));
  // Calibration from the out-of-fold predictions of every slice, pooled: fold k's tickers read at the pair fitted without them.
  const foldOf = new Map(foldTickers.flatMap((ts, k) => ts.map((t) => [t, k] as const)));
  startFits();
  const c0 = performance.now();
  const fitted = await Promise.all(fits as Promise<Calibration>[]);
  const c1 = performance.now();
  const foldCalibration = fitted.slice(0, folds);
  const shipped = fitted[folds]!;
  const calibrated = oof.map((preds) => preds.map((p) => atCalibration(p, foldCalibration[foldOf.get(p.ticker)!]!)));
  // The slices' calibration noise on the pool's threads while this one sums up their metrics.
  const noising = noiseAll(calibrated, threads);
  const metrics = calibrated.map((preds) => summarisePredictions(preds));
  const noise = await noising;
  log(`calibration: the fits done ${((c1 - c0) / 1000).toFixed(2)} s after the last fold, the slices' metrics and noise in ${((performance.now() - c1) / 1000).toFixed(2)} s`);
  return {
    folds,
    foldTickers,
    temperature: shipped.temperature,
    historyTemperature: shipped.kappa,
    contextTemperature: shipped.lambda,
    foldCalibration,
    slices: slices.map((slice, i) => ({ slice, metrics: metrics[i]!, eceNoise: noise[i]! })),
    byYear: metricsByYear(calibrated[0]!),
    predictions: calibrated[0]!,
    atT1: oof,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** One line per slice and per year: per ticker, per day, ECE and the confident tickers. */
export function formatCrossFit(r: CrossFitResult): string[] {
  const pct = (v: number) => `${(100 * v).toFixed(1)} %`;
  const lines = [`cross-fitted over ${r.folds} ticker folds (${r.seconds.toFixed(0)} s): T = ${r.temperature.toFixed(3)}, κ = ${r.historyTemperature.toFixed(1)}, λ = ${r.contextTemperature.toFixed(2)} from the out-of-fold predictions`];
  const row = (name: string, m: { perTicker: { accuracy: number }; perDay: { accuracy: number }; ece: number }, extra: string, wrong: string[]) =>
    `  ${name.padEnd(11)} per ticker ${pct(m.perTicker.accuracy).padStart(7)}  per day ${pct(m.perDay.accuracy).padStart(7)}  ECE ${m.ece.toFixed(3)}${extra}${wrong.length > 0 ? `  wrong: ${wrong.join(', ')}` : ''}`;
  for (const { slice, metrics: m, eceNoise } of r.slices) {
    const c = m.confident;
    const noise = ` (noise ${eceNoise.median.toFixed(3)}, 90 % ≤ ${eceNoise.p90.toFixed(3)})`;
    lines.push(row(slice.name, m, `${noise}${slice.name === 'all' ? `  confident ${c.correct}/${c.tickers}, uncertain ${c.uncertain.join(' ') || 'none'}` : ''}`, wrongTickers(m.outcomes)));
  }
  for (const y of r.byYear) lines.push(row(String(y.year), y, '', y.wrong));
  return lines;
}

/** What the model file's metrics keep of a cross-fit (`realCrossFitted`): the folder, the folds and every slice's figures. */
export function crossFitSummary(r: CrossFitResult, data: { dataDir: string; repeat: number; listings: number }, round: (v: number) => number): Record<string, unknown> {
  const level = (m: { perTicker: { accuracy: number }; perDay: { accuracy: number }; ece: number; tickers: number; days: number }) => ({
    perTicker: round(m.perTicker.accuracy),
    perDay: round(m.perDay.accuracy),
    ece: round(m.ece),
    tickers: m.tickers,
    days: m.days,
  });
  const all = r.slices[0]!.metrics;
  return {
    data: path.basename(path.resolve(data.dataDir)),
    repeat: data.repeat,
    listings: data.listings,
    folds: r.folds,
    foldCalibration: r.foldCalibration.map((c) => ({ temperature: round(c.temperature), kappa: round(c.kappa), lambda: round(c.lambda) })),
    slices: Object.fromEntries(r.slices.map(({ slice, metrics }) => [slice.name, level(metrics)])),
    byYear: Object.fromEntries(r.byYear.map((y) => [String(y.year), level(y)])),
    confident: { tickers: all.confident.tickers, correct: all.confident.correct, uncertain: all.confident.uncertain },
    wrong: Object.fromEntries([...r.slices.map(({ slice, metrics }) => [slice.name, wrongTickers(metrics.outcomes)] as const), ...r.byYear.map((y) => [String(y.year), y.wrong] as const)].filter(([, w]) => w.length > 0)),
  };
}
