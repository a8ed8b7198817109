/**
 * Evaluation of the router against labelled instruments: per-day and per-ticker (majority over days) accuracy,
 * per class, the confusion matrix, confidence and calibration. Used by `npm run evaluate` on real CSV data and by
 * training on held-out simulator data, so both report the same numbers the same way.
 */
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { DOMAINS, domainIndex, type Domain } from '../domains.js';
import { computeFeatures } from '../data/features/compute.js';
import { minHistoryBars } from '../config.js';
import { fetchContext } from '../data/sources/context-fetch.js';
import { MAX_RANGE_DAYS, UNCERTAIN_CONFIDENCE } from '../limits.js';
import { createSource, SourceError } from '../data/sources/create.js';
import { LabelsFileError, parseLabelsCsv } from '../data/sources/csv.js';
import type { Bar, FeatureSeries } from '../data/types.js';
import { CONTEXT_SET, type ContextName, type MarketContext } from '../data/features/context.js';
import { standInContext } from '../data/features/stand-in.js';
import type { Hidden } from '../router/layout.js';
import { loadModel, defaultModelPath } from '../router/model.js';
import { concatSeries } from '../router/batch.js';
import { tokenShortfall, tokenShortness } from '../router/history-temperature.js';
import { createForwarder, type Forwarder } from './forwarder.js';
import { createRulesForwarder } from './rules.js';
import { ECE_BINS, eceNoise, type CalibrationNoise } from './ece-noise.js';

export type { CalibrationNoise } from './ece-noise.js';

const D = DOMAINS.length;

/** Routing outcome of one labelled instrument. */
export interface TickerPrediction {
  ticker: string;
  /** True domain index. */
  label: number;
  /** Routed domain per day. */
  assign: Uint8Array;
  /** Probabilities per day, row-major `[days, 4]`. */
  probs: Float32Array;
  /** Day of each token (days since 1970-01-01), when known: `--by-year` groups by it. */
  dates?: Int32Array;
  /** Shortness of each token's history (src/router/history-temperature.ts), when known: calibration reads it. */
  shortness?: Float32Array;
  /** Context shortfall of each token (src/router/history-temperature.ts), when known: calibration reads it. */
  shortfall?: Float32Array;
}

export interface ClassAccuracy {
  /** `correct / total`, or null when the class has no sample. */
  accuracy: number | null;
  correct: number;
  total: number;
}

export interface LevelMetrics {
  accuracy: number;
  correct: number;
  total: number;
  byClass: Record<Domain, ClassAccuracy>;
  /** Rows: true domain, columns: predicted domain (counts). */
  confusion: number[][];
}

export interface TickerOutcome {
  ticker: string;
  label: Domain;
  predicted: Domain;
  /** Share of days routed to the predicted domain. */
  share: number;
  /** Share of days routed to the true domain. */
  dayAccuracy: number;
  meanConfidence: number;
  /** Mean probability of the predicted domain over days: what `summary.json` calls a ticker's confidence. */
  confidence: number;
  /** `confidence` below `UNCERTAIN_CONFIDENCE` (src/limits.ts). */
  uncertain: boolean;
  days: number;
}

/** The per-ticker call split at `UNCERTAIN_CONFIDENCE`: accuracy on the confident tickers, the uncertain ones apart. */
export interface ConfidentMetrics {
  threshold: number;
  /** Tickers at or above the threshold. */
  tickers: number;
  correct: number;
  /** `correct / tickers`, or null when no ticker is confident. */
  accuracy: number | null;
  /** Tickers below the threshold, in evaluation order. */
  uncertain: string[];
}

/** The metrics of the tokens dated in one calendar year (earlier bars serving as warm-up). */
export interface YearMetrics {
  year: number;
  tickers: number;
  days: number;
  /** Per ticker, the majority of its days in that year. */
  perTicker: LevelMetrics;
  perDay: LevelMetrics;
  meanConfidence: number;
  ece: number;
  nll: number;
  /** Tickers whose majority that year is not their label, as `TICKER: Label → Routed`. */
  wrong: string[];
}

export interface EvaluationMetrics {
  tickers: number;
  days: number;
  /** Per ticker, the domain most days were routed to. */
  perTicker: LevelMetrics;
  /** Per ticker, the domain of highest mean probability over days. */
  perTickerMeanProb: LevelMetrics;
  perDay: LevelMetrics;
  /** Per-ticker confusion (same as `perTicker.confusion`). */
  confusion: number[][];
  /** Mean over days of the top probability. */
  meanConfidence: number;
  /** Expected calibration error over days, 10 equal-width confidence bins. */
  ece: number;
  /** Mean negative log-likelihood of the true domain over days. */
  nll: number;
  outcomes: TickerOutcome[];
  confident: ConfidentMetrics;
}

function emptyLevel(): { correct: number; total: number; confusion: number[][] } {
  return { correct: 0, total: 0, confusion: DOMAINS.map(() => new Array<number>(D).fill(0)) };
}

function finishLevel(acc: { correct: number; total: number; confusion: number[][] }): LevelMetrics {
  const byClass = {} as Record<Domain, ClassAccuracy>;
  DOMAINS.forEach((name, c) => {
    const row = acc.confusion[c]!;
    const total = row.reduce((a, b) => a + b, 0);
    const correct = row[c]!;
    byClass[name] = { accuracy: total > 0 ? correct / total : null, correct, total };
  });
  return { accuracy: acc.total > 0 ? acc.correct / acc.total : 0, correct: acc.correct, total: acc.total, byClass, confusion: acc.confusion };
}

/**
 * The per-ticker call: the domain most days were routed to; ties go to the larger summed probability, then to the
 * lower index.
 */
export function majorityDomain(assign: Uint8Array, probs: Float32Array | Float64Array): number {
  const counts = new Array<number>(D).fill(0);
  const mass = new Array<number>(D).fill(0);
  for (let n = 0; n < assign.length; n++) {
    counts[assign[n]!]! += 1;
    for (let d = 0; d < D; d++) mass[d]! += probs[n * D + d]!;
  }
  return majorityOf(counts, mass);
}

/** majorityDomain's choice from a ticker's day counts and summed probabilities per domain. */
function majorityOf(counts: readonly number[], mass: readonly number[]): number {
  let best = 0;
  for (let d = 1; d < D; d++) {
    if (counts[d]! > counts[best]! || (counts[d] === counts[best] && mass[d]! > mass[best]!)) best = d;
  }
  return best;
}

/** The domain of highest summed (so mean) probability over a ticker's days, ties to the lower index. */
function highestMass(mass: readonly number[]): number {
  let best = 0;
  for (let d = 1; d < D; d++) if (mass[d]! > mass[best]!) best = d;
  return best;
}

export function summarisePredictions(preds: readonly TickerPrediction[]): EvaluationMetrics {
  const ticker = emptyLevel();
  const tickerMean = emptyLevel();
  const day = emptyLevel();
  const binCount = new Array<number>(ECE_BINS).fill(0);
  const binConf = new Array<number>(ECE_BINS).fill(0);
  const binCorrect = new Array<number>(ECE_BINS).fill(0);
  let confSum = 0;
  let nllSum = 0;
  const outcomes: TickerOutcome[] = [];
  if (D !== 4) throw new RangeError(`Expected 4 domains for summarisePredictions but received ${D}`);
  const counts = [0, 0, 0, 0];
  const mass = [0, 0, 0, 0];
  for (const p of preds) {
    // One pass over a ticker's days, its arrays read through locals (the predictions of one call come from several
    // places, in objects of several shapes). Every sum is taken in the order of the days, as majorityDomain takes
    // its own, so the call is its call to the bit: `mass` is its sums of probabilities (also the mean probability's
    // and, for the predicted domain, the call's confidence mass), `counts` its counts.
    const assign = p.assign;
    const probs = p.probs;
    const label = p.label;
    const days = assign.length;
    if (days === 0) continue;
    let tickerConf = 0;
    let dayCorrect = 0;
    let m0 = 0, m1 = 0, m2 = 0, m3 = 0;
    counts.fill(0);
    for (let n = 0; n < days; n++) {
      const a = assign[n]!;
      const o = n * 4;
      const q0 = probs[o]!, q1 = probs[o + 1]!, q2 = probs[o + 2]!, q3 = probs[o + 3]!;
      const conf = Math.max(Math.max(Math.max(Math.max(0, q0), q1), q2), q3);
      counts[a]! += 1;
      const correct = a === label;
      if (correct) dayCorrect += 1;
      const bin = Math.min(ECE_BINS - 1, Math.floor(conf * ECE_BINS));
      binCount[bin]! += 1;
      binConf[bin]! += conf;
      binCorrect[bin]! += correct ? 1 : 0;
      tickerConf += conf;
      nllSum -= Math.log(Math.max(probs[o + label]!, 1e-12));
      m0 += q0;
      m1 += q1;
      m2 += q2;
      m3 += q3;
    }
    mass[0] = m0;
    mass[1] = m1;
    mass[2] = m2;
    mass[3] = m3;
    for (let d = 0; d < D; d++) day.confusion[label]![d]! += counts[d]!;
    day.total += days;
    day.correct += dayCorrect;
    confSum += tickerConf;
    const predicted = majorityOf(counts, mass);
    const byMean = highestMass(mass);
    const share = counts[predicted]!;
    ticker.confusion[label]![predicted]! += 1;
    ticker.total += 1;
    if (predicted === label) ticker.correct += 1;
    tickerMean.confusion[label]![byMean]! += 1;
    tickerMean.total += 1;
    if (byMean === label) tickerMean.correct += 1;
    const confidence = mass[predicted]! / days;
    outcomes.push({
      ticker: p.ticker,
      label: DOMAINS[label]!,
      predicted: DOMAINS[predicted]!,
      share: share / days,
      dayAccuracy: dayCorrect / days,
      meanConfidence: tickerConf / days,
      confidence,
      uncertain: confidence < UNCERTAIN_CONFIDENCE,
      days,
    });
  }
  let ece = 0;
  for (let b = 0; b < ECE_BINS; b++) {
    if (binCount[b]! > 0) ece += Math.abs(binCorrect[b]! - binConf[b]!) / Math.max(day.total, 1);
  }
  const perTicker = finishLevel(ticker);
  return {
    tickers: ticker.total,
    days: day.total,
    perTicker,
    perTickerMeanProb: finishLevel(tickerMean),
    perDay: finishLevel(day),
    confusion: perTicker.confusion,
    meanConfidence: day.total > 0 ? confSum / day.total : 0,
    ece,
    nll: day.total > 0 ? nllSum / day.total : 0,
    outcomes,
    confident: confidentMetrics(outcomes),
  };
}

/**
 * The ECE that a perfectly calibrated router would show on these tokens: each token's top probability kept, whether
 * it was right drawn with exactly that probability (seeded, `draws` times), binned as `summarisePredictions` bins.
 * On few tokens the ECE is mostly this noise (97 tokens at the development folder's confidences: median ≈ 0.04,
 * 90th percentile ≈ 0.06), so an ECE is read against it; on thousands of tokens it is below 0.01.
 */
export function calibrationNoise(preds: readonly TickerPrediction[], draws = 100): CalibrationNoise {
  return eceNoise(confidences(preds), draws);
}

/** The top probability of every token of `preds`, in order (what `calibrationNoise` draws from). */
export function confidences(preds: readonly TickerPrediction[]): Float64Array {
  const conf = new Float64Array(preds.reduce((n, p) => n + p.assign.length, 0));
  let at = 0;
  for (const p of preds) {
    for (let n = 0; n < p.assign.length; n++) {
      let c = 0;
      for (let d = 0; d < D; d++) c = Math.max(c, p.probs[n * D + d]!);
      conf[at++] = c;
    }
  }
  return conf;
}

/** Accuracy of the per-ticker call on the tickers whose confidence reaches `UNCERTAIN_CONFIDENCE`. */
export function confidentMetrics(outcomes: readonly TickerOutcome[]): ConfidentMetrics {
  const sure = outcomes.filter((o) => !o.uncertain);
  const correct = sure.filter((o) => o.predicted === o.label).length;
  return {
    threshold: UNCERTAIN_CONFIDENCE,
    tickers: sure.length,
    correct,
    accuracy: sure.length > 0 ? correct / sure.length : null,
    uncertain: outcomes.filter((o) => o.uncertain).map((o) => o.ticker),
  };
}

/** `confident: X of N tickers, accuracy Y %; uncertain: Z` (Z: the uncertain tickers, or none). */
export function formatConfident(c: ConfidentMetrics, total: number): string {
  const acc = c.accuracy === null ? '-' : `${(100 * c.accuracy).toFixed(1)} %`;
  const list = c.uncertain.length > 0 ? `${c.uncertain.length} (${c.uncertain.join(' ')})` : '0';
  return `confident: ${c.tickers} of ${total} tickers, accuracy ${acc}; uncertain: ${list} (confidence below ${c.threshold})`;
}

/** Calendar year (UTC) of a day count since 1970-01-01. */
export function yearOfDays(days: number): number {
  return new Date(days * 86_400_000).getUTCFullYear();
}

/** The outcomes whose routed domain is not the label, as `TICKER: Label → Routed`. */
export function wrongTickers(outcomes: readonly TickerOutcome[]): string[] {
  return outcomes.filter((o) => o.predicted !== o.label).map((o) => `${o.ticker}: ${o.label} → ${o.predicted}`);
}

/**
 * Metrics per calendar year of the token dates: each ticker's tokens dated in that year (majority per ticker, per
 * day, calibration), so a year is judged only on its own days while the features of its first days still read the
 * bars of the year before. Predictions without dates are left out.
 */
export function metricsByYear(preds: readonly TickerPrediction[]): YearMetrics[] {
  const byYear = new Map<number, TickerPrediction[]>();
  for (const p of preds) {
    const dates = p.dates;
    if (dates === undefined) continue;
    // Dates ascend: each year is one run of tokens.
    let a = 0;
    while (a < dates.length) {
      const year = yearOfDays(dates[a]!);
      let b = a + 1;
      while (b < dates.length && yearOfDays(dates[b]!) === year) b++;
      const part: TickerPrediction = { ticker: p.ticker, label: p.label, assign: p.assign.subarray(a, b), probs: p.probs.subarray(a * D, b * D), dates: dates.subarray(a, b) };
      const list = byYear.get(year);
      if (list === undefined) byYear.set(year, [part]);
      else list.push(part);
      a = b;
    }
  }
  return [...byYear.keys()]
    .sort((x, y) => x - y)
    .map((year) => {
      const m = summarisePredictions(byYear.get(year)!);
      return { year, tickers: m.tickers, days: m.days, perTicker: m.perTicker, perDay: m.perDay, meanConfidence: m.meanConfidence, ece: m.ece, nll: m.nll, wrong: wrongTickers(m.outcomes) };
    });
}

// ---------------------------------------------------------------------------------------------------------------
// Routing labelled series through a Forwarder (forwarder.ts).

/** Routes each labelled series in one batch and splits the result back per ticker. */
export async function routeLabelled(
  forwarder: Forwarder,
  hidden: Hidden,
  items: readonly { series: FeatureSeries; label: number }[],
): Promise<TickerPrediction[]> {
  const { x, vol, risk, offsets } = concatSeries(items.map((it) => it.series), hidden);
  const total = offsets[offsets.length - 1]!;
  const out = total > 0 ? await forwarder.forward(x, vol, risk) : { probs: new Float32Array(0), assign: new Uint8Array(0) };
  const preds: TickerPrediction[] = [];
  let at = 0;
  for (const { series, label } of items) {
    const n = series.vol.length;
    preds.push({
      ticker: series.ticker,
      label,
      assign: out.assign.slice(at, at + n),
      probs: out.probs.slice(at * D, (at + n) * D),
      dates: series.dates,
      shortness: tokenShortness(series.x, hidden, n),
      shortfall: tokenShortfall(series.x, hidden, n),
    });
    at += n;
  }
  return preds;
}

// ---------------------------------------------------------------------------------------------------------------
// Labels file and directory evaluation.

export class EvaluationError extends Error {
  readonly code: 'BAD_LABELS' | 'NO_DATA';
  constructor(code: 'BAD_LABELS' | 'NO_DATA', message: string) {
    super(message);
    this.name = this.constructor.name;
    this.code = code;
  }
}

/** Parses a labels file with at least the columns `ticker,class` (any order, more columns ignored); strict. */
export function parseLabels(text: string, source: string): Map<string, number> {
  try {
    return new Map([...parseLabelsCsv(text, source, true)].map(([ticker, cls]) => [ticker, domainIndex(cls)]));
  } catch (e) {
    if (e instanceof LabelsFileError) throw new EvaluationError('BAD_LABELS', e.message);
    throw e;
  }
}

export interface EvaluateOptions {
  /** Folder of `<TICKER>.csv`. */
  dataDir: string;
  /** Labels CSV. @defaultValue `<dataDir>/labels.csv` */
  labelsFile?: string;
  /** Model file. @defaultValue `defaultModelPath()` */
  modelPath?: string;
  /** Only these tickers (still need a label and a CSV). @defaultValue all CSVs in the folder */
  tickers?: string[];
  /**
   * Routed days per ticker (the most recent of the bars used). @defaultValue every day from the ticker's bar
   * `minBars − 1` on
   */
  days?: number;
  /** Only each ticker's first `maxBars` bars (a new listing). Not with `lastBars`. @defaultValue all bars */
  maxBars?: number;
  /** Only each ticker's last `lastBars` bars. Not with `maxBars`. @defaultValue all bars */
  lastBars?: number;
  /**
   * One token per stretch of exactly `windowBars` bars of each ticker (as if it had listed at the stretch's first bar),
   * a stretch every `windowStep` bars, the last ending at the ticker's last bar: how the router does from N bars of
   * history, measured over many tokens per ticker instead of one (`maxBars`). Not with `maxBars`, `lastBars` or `days`.
   * @defaultValue off
   */
  windowBars?: number;
  /** Bars between the stretches of `windowBars`. @defaultValue `WINDOW_STEP` (20) */
  windowStep?: number;
  /** Fewest bars a token is made from (its first token is bar `minBars − 1`). @defaultValue `MIN_HISTORY_BARS` (60) */
  minBars?: number;
  /** Also metrics per calendar year of the token dates (`byYear` of the report). @defaultValue false */
  byYear?: boolean;
  /**
   * Second folder to look for the context series in (SPY, IEF, GLD, DBC, UUP) when `dataDir` lacks them.
   * @defaultValue none: only `dataDir`
   */
  contextDir?: string;
  /**
   * Only these context series (the others read as missing, as from a source that lacks them; `[]`: none at all).
   * @defaultValue every series found
   */
  keepContext?: readonly ContextName[];
  /** `learned` (the model file) or `rules` (the volatility baseline, rules.ts). @defaultValue `learned` */
  router?: 'learned' | 'rules';
  /**
   * Stand in for the equity, rates and commodity series where they do not reach (over less than 98 % of the folder's
   * days) with the median return of the folder's instruments routed to that domain, and route again with them
   * (`standInContext`, docs/features.md "Stand-in context"). Members left out by `keepContext` get none.
   * @defaultValue true
   */
  standInContext?: boolean;
  warn?: (message: string) => void;
}

export interface EvaluationReport extends EvaluationMetrics {
  model: string;
  backend: string;
  temperature: number;
  /** History temperature κ of the model (0: none; src/router/history-temperature.ts). */
  historyTemperature: number;
  /** Context temperature λ of the model (0: none; src/router/history-temperature.ts). */
  contextTemperature: number;
  /** Tickers with a CSV but no label. */
  skipped: string[];
  /** Tickers that had a label but whose data could not be used, with the reason. */
  failed: { ticker: string; reason: string }[];
  predictions: TickerPrediction[];
  /**
   * Where each context series came from, and which were missing; `standIn` names the series that the folder's own
   * instruments stood in for, where and from how many (absent when none).
   */
  context: { from: Record<string, string>; missing: { ticker: string; reason: string }[]; standIn?: Record<string, string> };
  router: 'learned' | 'rules';
  /** With the learned router: the rules baseline on the same days, for comparison. */
  baseline?: EvaluationMetrics;
  /** The bars each ticker was routed from: all, its first N, its last N (tokens from bar `minBars − 1` of those), or every stretch of N bars, one every `step` (one token each). */
  bars: { slice: 'all' | 'first' | 'last' | 'windows'; count: number | null; minBars: number; step?: number };
  /** With `byYear`: metrics per calendar year of the token dates. */
  byYear?: YearMetrics[];
  /** The ECE a perfectly calibrated router would show on these tokens (`calibrationNoise`): what `ece` is read against. */
  eceNoise: CalibrationNoise;
}


/** Labelled series of a folder, turned into features, with what was skipped or failed and where context came from. */
export interface LabelledDirectory {
  items: { series: FeatureSeries; label: number }[];
  skipped: string[];
  failed: { ticker: string; reason: string }[];
  context: EvaluationReport['context'];
}

/** Why one labelled file could not be used: a source error's code and message, else the error's name and message. */
function failureReason(e: unknown): string {
  if (!(e instanceof Error)) throw e;
  return e instanceof SourceError ? `${e.code}: ${e.message}` : `${e.name}: ${e.message}`;
}

/** Labelled bars of a folder with the context series for their dates: `loadLabelledDirectory` before the features. */
export interface LabelledBars {
  loaded: { ticker: string; label: number; bars: Bar[] }[];
  context: MarketContext;
  skipped: string[];
  failed: { ticker: string; reason: string }[];
  contextFrom: EvaluationReport['context'];
  dataDir: string;
}

/** Options of `loadLabelledBars` (evaluate's, plus tickers left out). */
export type LabelledBarsOptions = Pick<
  EvaluateOptions,
  'dataDir' | 'labelsFile' | 'tickers' | 'days' | 'contextDir' | 'keepContext' | 'warn' | 'maxBars' | 'lastBars' | 'minBars' | 'windowBars' | 'windowStep'
> & {
  /** Tickers left out as if their files were absent (a cross-fitting fold). @defaultValue none */
  exclude?: readonly string[];
};

/**
 * Reads every labelled `<TICKER>.csv` of a folder and the context series for the dates they cover (from the folder,
 * then `contextDir`). One unusable file is reported in `failed`, never fatal.
 */
export async function loadLabelledBars(opts: LabelledBarsOptions): Promise<LabelledBars> {
  const minBars = opts.minBars ?? minHistoryBars();
  if (opts.maxBars !== undefined && opts.lastBars !== undefined) {
    throw new RangeError(`Expected either maxBars or lastBars but received both (${opts.maxBars}, ${opts.lastBars})`);
  }
  if (opts.windowBars !== undefined && (opts.maxBars !== undefined || opts.lastBars !== undefined || opts.days !== undefined)) {
    throw new RangeError(`Expected windowBars without maxBars, lastBars or days but received windowBars ${opts.windowBars} with them`);
  }
  for (const [name, v] of [['maxBars', opts.maxBars], ['lastBars', opts.lastBars], ['windowBars', opts.windowBars]] as const) {
    if (v !== undefined && !(Number.isSafeInteger(v) && v >= minBars)) {
      throw new RangeError(`Expected integer ≥ ${minBars} (the minimum history) for ${name} but received ${String(v)}`);
    }
  }
  if (opts.windowStep !== undefined && !(Number.isSafeInteger(opts.windowStep) && opts.windowStep >= 1)) {
    throw new RangeError(`Expected integer ≥ 1 for windowStep but received ${String(opts.windowStep)}`);
  }
  const dataDir = path.resolve(opts.dataDir);
  const labelsFile = path.resolve(opts.labelsFile ?? path.join(dataDir, 'labels.csv'));
  let labelText: string;
  try {
    labelText = await readFile(labelsFile, 'utf8');
  } catch (cause) {
    throw new EvaluationError('BAD_LABELS', `Expected a readable labels file for --labels but received ${labelsFile} (${(cause as Error).message})`);
  }
  const labels = parseLabels(labelText, labelsFile);
  const files = (await readdir(dataDir)).filter(
    (f) => f.toLowerCase().endsWith('.csv') && f.toLowerCase() !== 'labels.csv' && path.resolve(dataDir, f) !== labelsFile,
  );
  let tickers = files.map((f) => f.slice(0, -4).toUpperCase()).sort();
  const failed: { ticker: string; reason: string }[] = [];
  // One unusable file must not sink the whole evaluation: it is reported with its reason instead.
  const fail = (ticker: string, e: unknown): void => void failed.push({ ticker, reason: failureReason(e) });
  if (opts.tickers !== undefined) {
    const wanted = new Set(opts.tickers.map((t) => t.toUpperCase()));
    for (const t of wanted) if (!tickers.includes(t)) failed.push({ ticker: t, reason: `no ${t}.csv in ${dataDir}` });
    tickers = tickers.filter((t) => wanted.has(t));
  }
  if (opts.exclude !== undefined) {
    const out = new Set(opts.exclude.map((t) => t.toUpperCase()));
    tickers = tickers.filter((t) => !out.has(t));
  }
  const skipped = tickers.filter((t) => !labels.has(t));
  const source = createSource({ source: 'csv', dataDir });
  const contextSources = [{ label: dataDir, source }];
  if (opts.contextDir !== undefined) {
    const dir = path.resolve(opts.contextDir);
    contextSources.push({ label: dir, source: createSource({ source: 'csv', dataDir: dir }) });
  }
  // Every file first: the context series are chosen for the dates these tickers cover (fetchContext's span).
  const loaded: { ticker: string; label: number; bars: Bar[] }[] = [];
  for (const ticker of tickers) {
    const label = labels.get(ticker);
    if (label === undefined) continue;
    try {
      // A slice needs the whole file (its first bars); otherwise the source's `days + WARMUP_DAYS` bars suffice.
      const sliced = opts.maxBars !== undefined || opts.lastBars !== undefined || opts.windowBars !== undefined;
      const result = await source.fetch(ticker, { days: sliced ? MAX_RANGE_DAYS : (opts.days ?? MAX_RANGE_DAYS) });
      let bars = result.bars;
      if (opts.maxBars !== undefined) bars = bars.slice(0, opts.maxBars);
      if (opts.lastBars !== undefined) bars = bars.slice(-opts.lastBars);
      loaded.push({ ticker, label, bars });
    } catch (e) {
      fail(ticker, e);
    }
  }
  // The folder's dates: its earliest first bar to its latest last bar (ISO dates sort as strings).
  const firsts = loaded.filter((l) => l.bars.length > 0).map((l) => l.bars[0]!.date).sort();
  const lasts = loaded.filter((l) => l.bars.length > 0).map((l) => l.bars.at(-1)!.date).sort();
  const span = firsts.length === 0 ? undefined : { from: firsts[0]!, to: lasts.at(-1)! };
  const ctx = await fetchContext(contextSources, { days: MAX_RANGE_DAYS }, span);
  if (opts.keepContext !== undefined) {
    // As from a source without the others: those series read as missing (NO_CONTEXT with none kept).
    const keep = new Set<string>(opts.keepContext);
    const left = CONTEXT_SET.filter((c) => !keep.has(c.name));
    ctx.context = ctx.context.map((series, i) => (keep.has(CONTEXT_SET[i]!.name) ? series : null));
    ctx.missing = [...ctx.missing.filter((m) => !left.some((c) => c.ticker === m.ticker)), ...left.map((c) => ({ ticker: c.ticker, reason: 'left out' }))];
    for (const c of left) delete ctx.from[c.ticker];
  }
  for (const m of ctx.missing) opts.warn?.(`context series ${m.ticker} missing (${m.reason}); its features read as "no context"`);
  return { loaded, context: ctx.context, skipped, failed, contextFrom: { from: ctx.from, missing: ctx.missing }, dataDir };
}

/**
 * Reads every labelled `<TICKER>.csv` of a folder and computes its features (with the context from the folder, then
 * `contextDir`). One unusable file is reported in `failed`, never fatal; no usable file at all is.
 */
export async function loadLabelledDirectory(opts: LabelledBarsOptions, hidden: Hidden): Promise<LabelledDirectory> {
  const minBars = opts.minBars ?? minHistoryBars();
  const bars = await loadLabelledBars(opts);
  const { items, failed } = labelledFeatures(bars, hidden, { ...opts, minBars }, () => bars.context);
  return { items, skipped: bars.skipped, failed, context: bars.contextFrom };
}

/**
 * The features of a folder's loaded bars, each ticker with the context `contextFor` gives it; a ticker whose
 * features cannot be made joins the folder's failures (a copy of `bars.failed`). NO_DATA when no ticker has any.
 */
function labelledFeatures(
  bars: LabelledBars,
  hidden: Hidden,
  opts: Pick<LabelledBarsOptions, 'days' | 'windowBars' | 'windowStep'> & { minBars: number },
  contextFor: (ticker: string) => MarketContext,
): { items: { series: FeatureSeries; label: number }[]; failed: { ticker: string; reason: string }[] } {
  const { minBars } = opts;
  const failed = [...bars.failed];
  const items: { series: FeatureSeries; label: number }[] = [];
  for (const { ticker, label, bars: tickerBars } of bars.loaded) {
    try {
      const context = contextFor(ticker);
      const series =
        opts.windowBars !== undefined
          ? windowedFeatures(ticker, tickerBars, hidden, context, opts.windowBars, opts.windowStep ?? WINDOW_STEP)
          : computeFeatures(ticker, tickerBars, hidden, context, { minBars, ...(opts.days !== undefined ? { days: opts.days } : {}) });
      if (series.vol.length === 0) {
        const need = opts.windowBars !== undefined ? `a stretch of ${opts.windowBars}` : `the minimum history of ${minBars}`;
        throw new Error(`no routed day: ${tickerBars.length} bars, fewer than ${need}`);
      }
      items.push({ series, label });
    } catch (e) {
      failed.push({ ticker, reason: failureReason(e) });
    }
  }
  if (items.length === 0) {
    throw new EvaluationError(
      'NO_DATA',
      `Expected at least one labelled ticker with data in ${bars.dataDir} but received none (${bars.skipped.length} unlabelled, ${failed.length} failed)`,
    );
  }
  return { items, failed };
}

/** Bars between two stretches of `windowBars` (a month of trading days). */
export const WINDOW_STEP = 20;

/**
 * One token per stretch of `windowBars` bars of `bars` (the token of its last bar, made from that stretch alone), a
 * stretch every `step` bars, the last ending at the last bar; in date order, as one series. No stretch when there
 * are fewer than `windowBars` bars.
 */
export function windowedFeatures(ticker: string, bars: readonly Bar[], hidden: Hidden, context: MarketContext, windowBars: number, step: number): FeatureSeries {
  const starts: number[] = [];
  for (let s = bars.length - windowBars; s >= 0; s -= step) starts.unshift(s);
  const out: FeatureSeries = {
    ticker,
    hidden,
    dates: new Int32Array(starts.length),
    x: new Float32Array(starts.length * hidden),
    vol: new Float32Array(starts.length),
    risk: new Float32Array(starts.length),
    ret: new Float32Array(starts.length),
  };
  starts.forEach((s, i) => {
    const one = computeFeatures(ticker, bars.slice(s, s + windowBars), hidden, context, { minBars: windowBars });
    const last = one.vol.length - 1;
    out.dates[i] = one.dates[last]!;
    out.x.set(one.x.subarray(last * hidden, (last + 1) * hidden), i * hidden);
    out.vol[i] = one.vol[last]!;
    out.risk[i] = one.risk[last]!;
    out.ret[i] = one.ret[last]!;
  });
  return out;
}

export async function evaluateDirectory(opts: EvaluateOptions): Promise<EvaluationReport> {
  const modelPath = path.resolve(opts.modelPath ?? defaultModelPath());
  const router = opts.router ?? 'learned';
  // The rules read only the volatility scalar, which does not depend on the embedding size.
  const model = router === 'learned' ? await loadModel(modelPath) : { hidden: 16 as const, temperature: 1 };
  const minBars = opts.minBars ?? minHistoryBars();
  const bars = await loadLabelledBars({ ...opts, minBars });
  let { items, failed } = labelledFeatures(bars, model.hidden, { ...opts, minBars }, () => bars.context);
  const { skipped } = bars;
  const context: EvaluationReport['context'] = { ...bars.contextFrom };
  const forwarder = 'params' in model ? createForwarder(model, opts.warn ? { warn: opts.warn } : {}) : createRulesForwarder();
  try {
    let predictions = await routeLabelled(forwarder, model.hidden, items);
    // Where the broad reference series do not reach, the folder's own instruments stand in for them, grouped by this
    // first routing; the tickers are then routed again with that context (stand-in.ts).
    const keep = opts.keepContext === undefined ? undefined : new Set<string>(opts.keepContext);
    const standIn =
      router === 'learned' && opts.standInContext !== false
        ? standInContext(bars.loaded, bars.context, new Map(predictions.map((p) => [p.ticker, majorityDomain(p.assign, p.probs)])), (name) => keep === undefined || keep.has(name))
        : undefined;
    if (standIn !== undefined) {
      ({ items, failed } = labelledFeatures(bars, model.hidden, { ...opts, minBars }, (t) => standIn.contextFor(t)));
      predictions = await routeLabelled(forwarder, model.hidden, items);
      context.standIn = standIn.notes;
      for (const [ticker, note] of Object.entries(standIn.notes)) opts.warn?.(`context series ${ticker}: ${note}`);
    }
    const baseline = router === 'learned' ? summarisePredictions(await routeLabelled(createRulesForwarder(), model.hidden, items)) : undefined;
    return {
      ...summarisePredictions(predictions),
      ...(baseline ? { baseline } : {}),
      router,
      model: router === 'learned' ? modelPath : 'rules (volatility bands, src/training/rules.ts)',
      backend: forwarder.backend,
      temperature: model.temperature,
      historyTemperature: 'historyTemperature' in model ? model.historyTemperature : 0,
      contextTemperature: 'contextTemperature' in model ? model.contextTemperature : 0,
      skipped,
      failed,
      predictions,
      context,
      bars: {
        slice: opts.maxBars !== undefined ? 'first' : opts.lastBars !== undefined ? 'last' : opts.windowBars !== undefined ? 'windows' : 'all',
        count: opts.maxBars ?? opts.lastBars ?? opts.windowBars ?? null,
        minBars,
        ...(opts.windowBars !== undefined ? { step: opts.windowStep ?? WINDOW_STEP } : {}),
      },
      ...(opts.byYear ? { byYear: metricsByYear(predictions) } : {}),
      eceNoise: calibrationNoise(predictions),
    };
  } finally {
    forwarder.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Text rendering.

const pct = (v: number | null): string => (v === null ? '   -  ' : `${(100 * v).toFixed(1).padStart(5)}%`);

export function formatLevel(title: string, level: LevelMetrics): string[] {
  const lines = [`${title}: ${pct(level.accuracy)} (${level.correct}/${level.total})`];
  for (const name of DOMAINS) {
    const c = level.byClass[name];
    lines.push(`  ${name.padEnd(13)} ${pct(c.accuracy)} (${c.correct}/${c.total})`);
  }
  return lines;
}

export function formatConfusion(confusion: number[][]): string[] {
  const short = ['Eq', 'FI', 'Co', 'De'];
  const lines = [`  ${'true \\ routed'.padEnd(14)}${short.map((s) => s.padStart(7)).join('')}`];
  confusion.forEach((row, c) => {
    lines.push(`  ${DOMAINS[c]!.padEnd(14)}${row.map((v) => String(v).padStart(7)).join('')}`);
  });
  return lines;
}

/** Human-readable report: per-ticker table, per-class and overall accuracy at both levels, confusion matrices. */
export function formatEvaluation(r: EvaluationReport): string {
  const lines: string[] = [];
  lines.push(`model ${r.model} (backend ${r.backend}, temperature ${r.temperature.toFixed(3)}, history temperature ${r.historyTemperature.toFixed(1)}, context temperature ${r.contextTemperature.toFixed(2)})`);
  lines.push(`tickers used ${r.tickers}, skipped without label ${r.skipped.length}, failed ${r.failed.length}; days ${r.days}`);
  lines.push(`bars: ${barsText(r.bars)}`);
  if (r.skipped.length > 0) lines.push(`skipped: ${r.skipped.join(' ')}`);
  for (const f of r.failed) lines.push(`failed: ${f.ticker}: ${f.reason}`);
  lines.push('');
  lines.push(`${'ticker'.padEnd(8)} ${'label'.padEnd(13)} ${'routed'.padEnd(13)} share  day-acc  conf  ok`);
  for (const o of r.outcomes) {
    lines.push(
      `${o.ticker.padEnd(8)} ${o.label.padEnd(13)} ${o.predicted.padEnd(13)} ${pct(o.share)} ${pct(o.dayAccuracy)} ${o.meanConfidence.toFixed(2)}  ${o.label === o.predicted ? 'yes' : 'NO'}`,
    );
  }
  lines.push('');
  lines.push(...formatLevel('per ticker (majority over days)', r.perTicker));
  lines.push(formatConfident(r.confident, r.tickers));
  lines.push(...formatLevel('per ticker (highest mean probability)', r.perTickerMeanProb));
  lines.push(...formatLevel('per day', r.perDay));
  lines.push('confusion per ticker:', ...formatConfusion(r.perTicker.confusion));
  lines.push('confusion per day:', ...formatConfusion(r.perDay.confusion));
  lines.push(
    `mean confidence ${r.meanConfidence.toFixed(3)}, ECE ${r.ece.toFixed(3)} (a perfectly calibrated router on these ${r.days} tokens: ${r.eceNoise.median.toFixed(3)}, 90th percentile ${r.eceNoise.p90.toFixed(3)}), NLL ${r.nll.toFixed(3)}`,
  );
  const ctxFrom = Object.entries(r.context.from).map(([t, from]) => `${t} (${from})`);
  lines.push(`context: ${ctxFrom.length > 0 ? ctxFrom.join(', ') : 'none'}${r.context.missing.length > 0 ? `; missing ${r.context.missing.map((m) => m.ticker).join(' ')}` : ''}`);
  for (const [t, note] of Object.entries(r.context.standIn ?? {})) lines.push(`context ${t}: ${note}`);
  if (r.baseline) {
    const b = r.baseline;
    lines.push(
      `rules baseline on the same days: per ticker ${pct(b.perTicker.accuracy)}, per day ${pct(b.perDay.accuracy)}, ECE ${b.ece.toFixed(3)}`,
    );
  }
  if (r.byYear) lines.push('', ...formatByYear(r.byYear));
  return lines.join('\n');
}

function barsText(b: EvaluationReport['bars']): string {
  const from = `one token a day from each ticker's ${b.minBars}th bar on (minimum history)`;
  if (b.slice === 'first') return `each ticker's first ${b.count} bars (a new listing); ${from}`;
  if (b.slice === 'last') return `each ticker's last ${b.count} bars; ${from}`;
  if (b.slice === 'windows') return `one token per stretch of ${b.count} bars of each ticker (as a listing that old), a stretch every ${b.step} bars, the last ending at its last bar`;
  return `all; ${from}`;
}

/** One line per calendar year: tickers and days in it, per-ticker (majority of that year's days) and per-day accuracy, calibration. */
export function formatByYear(years: readonly YearMetrics[]): string[] {
  const lines = ['by calendar year of the token dates (earlier bars as warm-up):'];
  lines.push(`  ${'year'.padEnd(6)}${'tickers'.padStart(8)}${'days'.padStart(8)}  ${'per ticker'.padStart(17)}  ${'per day'.padStart(7)}  conf    ECE`);
  for (const y of years) {
    lines.push(
      `  ${String(y.year).padEnd(6)}${String(y.tickers).padStart(8)}${String(y.days).padStart(8)}  ${pct(y.perTicker.accuracy)} (${`${y.perTicker.correct}/${y.perTicker.total}`.padStart(7)})  ${pct(y.perDay.accuracy)}  ${y.meanConfidence.toFixed(2)}  ${y.ece.toFixed(3)}${y.wrong.length > 0 ? `  wrong: ${y.wrong.join(', ')}` : ''}`,
    );
  }
  return lines;
}

/** The machine-readable summary printed by `--json` (no per-day arrays). */
export function evaluationJson(r: EvaluationReport): Record<string, unknown> {
  const level = (l: LevelMetrics) => ({ accuracy: l.accuracy, correct: l.correct, total: l.total, byClass: l.byClass });
  return {
    router: r.router,
    model: r.model,
    backend: r.backend,
    temperature: r.temperature,
    historyTemperature: r.historyTemperature,
    contextTemperature: r.contextTemperature,
    tickers: r.tickers,
    days: r.days,
    skipped: r.skipped,
    failed: r.failed,
    perTicker: level(r.perTicker),
    confident: r.confident,
    perTickerMeanProb: level(r.perTickerMeanProb),
    perDay: level(r.perDay),
    confusion: r.perTicker.confusion,
    confusionDays: r.perDay.confusion,
    meanConfidence: r.meanConfidence,
    ece: r.ece,
    eceNoise: r.eceNoise,
    nll: r.nll,
    context: r.context,
    bars: r.bars,
    ...(r.byYear
      ? {
          byYear: r.byYear.map((y) => ({
            year: y.year,
            tickers: y.tickers,
            days: y.days,
            perTicker: level(y.perTicker),
            perDay: level(y.perDay),
            meanConfidence: y.meanConfidence,
            ece: y.ece,
            nll: y.nll,
            wrong: y.wrong,
          })),
        }
      : {}),
    ...(r.baseline
      ? { baseline: { router: 'rules', perTicker: level(r.baseline.perTicker), perDay: level(r.baseline.perDay), ece: r.baseline.ece, confusion: r.baseline.confusion } }
      : {}),
    predictions: r.outcomes,
  };
}
