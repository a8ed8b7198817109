import { DOMAINS, NUM_DOMAINS, type Domain } from '../src/domains.js';
import { businessDaysBetween } from '../src/data/dates.js';
import type { DataQuality } from '../src/data/types.js';
import { UNCERTAIN_CONFIDENCE } from '../src/limits.js';
import type { TickerQuality, TickerSeries, TickerSummary } from '../src/report/types.js';

/**
 * Per-ticker aggregation of one routed batch: pure functions, so the route worker stays thin and these are tested
 * without Redis or the native router.
 */

const MS_PER_DAY = 86_400_000;

/** ISO `YYYY-MM-DD` of a day count since 1970-01-01 UTC. */
export function dayToIso(day: number): string {
  return new Date(day * MS_PER_DAY).toISOString().slice(0, 10);
}

/** One ticker's slice of the routed batch. All arrays cover the same `days` tokens, in date order. */
export interface RoutedTicker {
  ticker: string;
  class?: Domain;
  subtype?: string;
  dates: Int32Array;
  vol: Float32Array;
  ret: Float32Array;
  /** Router probabilities, row-major `[days, 4]`. */
  probs: Float32Array;
  /** Router assignment per day. */
  assign: Uint8Array;
  /** Routed days the run asked for (the fetch result's `requestedDays`). */
  requestedDays?: number;
  /** What cleaning did to the ticker's bars (the fetch result's `quality`). */
  quality?: DataQuality;
}

export class AggregateError extends Error {
  readonly code = 'BAD_ROUTED_SLICE';
  constructor(message: string) {
    super(message);
    this.name = this.constructor.name;
  }
}

function check(t: RoutedTicker): number {
  const n = t.dates.length;
  if (n === 0) throw new AggregateError(`Expected at least one routed day for ${t.ticker} but received 0`);
  const lens: [string, number, number][] = [
    ['vol', t.vol.length, n],
    ['ret', t.ret.length, n],
    ['assign', t.assign.length, n],
    ['probs', t.probs.length, n * NUM_DOMAINS],
  ];
  for (const [name, got, want] of lens) {
    if (got !== want) throw new AggregateError(`Expected length ${want} for ${t.ticker}.${name} but received ${got}`);
  }
  return n;
}

/** Mean of the finite values (NaN marks a missing value in feature blocks); 0 when none is finite. */
function finiteMean(a: Float32Array): number {
  let s = 0;
  let k = 0;
  for (const v of a) {
    if (Number.isFinite(v)) {
      s += v;
      k++;
    }
  }
  return k === 0 ? 0 : s / k;
}

function finiteSum(a: Float32Array): number {
  let s = 0;
  for (const v of a) if (Number.isFinite(v)) s += v;
  return s;
}

/**
 * Majority domain over days (ties: lowest index), mean probabilities, confidence = mean probability of the chosen
 * domain, days per domain, total log return, mean realised volatility, first and last date.
 */
export function summarizeTicker(t: RoutedTicker): TickerSummary {
  const n = check(t);
  const domainDays: [number, number, number, number] = [0, 0, 0, 0];
  const sums = [0, 0, 0, 0];
  for (let i = 0; i < n; i++) {
    const a = t.assign[i]!;
    if (a >= NUM_DOMAINS) throw new AggregateError(`Expected domain index 0..3 for ${t.ticker}.assign[${i}] but received ${a}`);
    domainDays[a as 0 | 1 | 2 | 3] += 1;
    for (let d = 0; d < NUM_DOMAINS; d++) sums[d]! += t.probs[i * NUM_DOMAINS + d]!;
  }
  let best = 0;
  for (let d = 1; d < NUM_DOMAINS; d++) if (domainDays[d]! > domainDays[best]!) best = d;
  const probs = sums.map((s) => s / n) as [number, number, number, number];
  const out: TickerSummary = {
    ticker: t.ticker,
    domain: DOMAINS[best]!,
    probs,
    confidence: probs[best]!,
    days: n,
    domainDays,
    totalReturn: finiteSum(t.ret),
    meanVol: finiteMean(t.vol),
    firstDate: dayToIso(t.dates[0]!),
    lastDate: dayToIso(t.dates[n - 1]!),
  };
  if (t.class !== undefined) out.class = t.class;
  if (t.subtype !== undefined) out.subtype = t.subtype;
  if (out.confidence < UNCERTAIN_CONFIDENCE) out.uncertain = true;
  if (t.requestedDays !== undefined) {
    out.requestedDays = t.requestedDays;
    if (n < t.requestedDays) out.short = true;
  }
  if (t.quality !== undefined) out.quality = tickerQuality(t.quality, t.dates);
  return out;
}

/** The fetch stage's cleaning counts as the summary shows them, plus the gaps inside the routed days. */
export function tickerQuality(q: DataQuality, dates: Int32Array): TickerQuality {
  let routedGaps = 0;
  for (let i = 1; i < dates.length; i++) routedGaps += businessDaysBetween(dates[i - 1]!, dates[i]!);
  const out: TickerQuality = {
    dropped: { malformed: q.malformed ?? 0, badPrice: q.nulls, duplicates: q.duplicates },
    gaps: q.gaps,
    routedGaps,
  };
  if (q.rows !== undefined) out.rows = q.rows;
  return out;
}

/** The per-day series the time-series report draws: confidence is the probability of the assigned domain. */
export function tickerSeries(t: RoutedTicker): TickerSeries {
  const n = check(t);
  const confidence = new Float32Array(n);
  for (let i = 0; i < n; i++) confidence[i] = t.probs[i * NUM_DOMAINS + t.assign[i]!]!;
  const out: TickerSeries = {
    ticker: t.ticker,
    dates: t.dates,
    vol: t.vol,
    ret: t.ret,
    confidence,
    assign: t.assign,
  };
  if (t.class !== undefined) out.class = t.class;
  return out;
}
