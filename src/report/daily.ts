import { DOMAINS, NUM_DOMAINS } from '../domains.js';
import { expectedMessage } from '../util/describe.js';
import { ReportError } from './errors.js';
import { classOf } from './market-condition.js';
import { UNKNOWN_CLASS } from './theme.js';
import type { DailyAggregate, TickerSeries } from './types.js';

/**
 * The per-day sums the time-series figure is drawn from, so a run's days × tickers never have to be in one place:
 * each route shard reduces its own tickers' series to one `DailyAggregate`, the report merges the shards' (sums and
 * counts add up), and the figure divides. Its size is 16 numbers per distinct date of the run, whatever the number of
 * tickers: about 320 KB of JSON for `MAX_DAYS` (2,520) dates.
 */

/** Rows of `DailyAggregate` class sums: the domains in `DOMAINS` order, then `Unknown` (the order `classOrder` gives). */
export const DAILY_CLASSES: readonly string[] = [...DOMAINS, UNKNOWN_CLASS];

function rows(n: number, len: number): number[][] {
  return Array.from({ length: n }, () => new Array<number>(len).fill(0));
}

function empty(dates: number[]): DailyAggregate {
  const len = dates.length;
  return {
    dates,
    classSeries: new Array<number>(DAILY_CLASSES.length).fill(0),
    volSum: rows(DAILY_CLASSES.length, len),
    volN: rows(DAILY_CLASSES.length, len),
    confSum: new Array<number>(len).fill(0),
    confN: new Array<number>(len).fill(0),
    assigned: rows(NUM_DOMAINS, len),
  };
}

/** Sums of the given series by date (one pass; the series are not kept). */
export function dailyAggregate(series: readonly TickerSeries[]): DailyAggregate {
  const dateSet = new Set<number>();
  for (const s of series) for (const d of s.dates) dateSet.add(d);
  const agg = empty([...dateSet].sort((a, b) => a - b));
  const col = new Map(agg.dates.map((d, i) => [d, i]));
  for (const s of series) {
    const c = DAILY_CLASSES.indexOf(classOf(s));
    agg.classSeries[c] = (agg.classSeries[c] ?? 0) + 1;
    const volSum = agg.volSum[c]!;
    const volN = agg.volN[c]!;
    for (let i = 0; i < s.dates.length; i++) {
      const j = col.get(s.dates[i]!)!;
      const v = s.vol[i];
      if (v !== undefined && Number.isFinite(v)) {
        volSum[j]! += v;
        volN[j]! += 1;
      }
      const conf = s.confidence[i];
      if (conf !== undefined && Number.isFinite(conf)) {
        agg.confSum[j]! += conf;
        agg.confN[j]! += 1;
      }
      const row = agg.assigned[s.assign[i]!];
      if (row !== undefined) row[j]! += 1;
    }
  }
  return agg;
}

/** The aggregate of two disjoint sets of tickers: dates united, sums and counts added. */
export function mergeDaily(a: DailyAggregate, b: DailyAggregate): DailyAggregate {
  const out = empty([...new Set([...a.dates, ...b.dates])].sort((x, y) => x - y));
  const col = new Map(out.dates.map((d, i) => [d, i]));
  for (const part of [a, b]) {
    const at = part.dates.map((d) => col.get(d)!);
    const add = (into: number[], from: number[]) => at.forEach((j, i) => (into[j]! += from[i]!));
    part.classSeries.forEach((n, c) => (out.classSeries[c]! += n));
    part.volSum.forEach((r, c) => add(out.volSum[c]!, r));
    part.volN.forEach((r, c) => add(out.volN[c]!, r));
    add(out.confSum, part.confSum);
    add(out.confN, part.confN);
    part.assigned.forEach((r, d) => add(out.assigned[d]!, r));
  }
  return out;
}

function fail(what: string, name: string, value: unknown): never {
  throw new ReportError('BAD_REPORT_INPUT', expectedMessage(what, name, value));
}

function numbers(v: unknown, len: number, name: string, integer: boolean): number[] {
  if (!Array.isArray(v) || v.length !== len) fail(`array of ${len} numbers`, name, v);
  for (let i = 0; i < len; i++) {
    const x: unknown = v[i];
    if (typeof x !== 'number' || !Number.isFinite(x) || (integer && (x < 0 || !Number.isSafeInteger(x)))) {
      fail(integer ? 'integer ≥ 0' : 'finite number', `${name}[${i}]`, x);
    }
  }
  return v as number[];
}

function table(v: unknown, n: number, len: number, name: string, integer: boolean): number[][] {
  if (!Array.isArray(v) || v.length !== n) fail(`array of ${n} rows`, name, v);
  return v.map((r, i) => numbers(r, len, `${name}[${i}]`, integer));
}

/**
 * Checks a `DailyAggregate` that crossed a process boundary (a shard's output in Redis), with every array's length
 * and value; throws `ReportError` naming the first bad field.
 */
export function validateDailyAggregate(v: unknown, name = 'daily'): DailyAggregate {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail('DailyAggregate object', name, v);
  const d = v as Record<string, unknown>;
  if (!Array.isArray(d.dates)) fail('array of ascending day numbers', `${name}.dates`, d.dates);
  const dates = d.dates as unknown[];
  dates.forEach((x, i) => {
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || (i > 0 && x <= (dates[i - 1] as number))) {
      fail('ascending integer day numbers', `${name}.dates[${i}]`, x);
    }
  });
  const len = dates.length;
  const C = DAILY_CLASSES.length;
  return {
    dates: dates as number[],
    classSeries: numbers(d.classSeries, C, `${name}.classSeries`, true),
    volSum: table(d.volSum, C, len, `${name}.volSum`, false),
    volN: table(d.volN, C, len, `${name}.volN`, true),
    confSum: numbers(d.confSum, len, `${name}.confSum`, false),
    confN: numbers(d.confN, len, `${name}.confN`, true),
    assigned: table(d.assigned, NUM_DOMAINS, len, `${name}.assigned`, true),
  };
}
