import type { Bar } from '../types.js';
import { isoToDays } from '../dates.js';

/**
 * The fixed market-context set. Daily statistics of one series cannot tell a gold fund from a stock index or a
 * long-Treasury fund (all about 1 %/day, near-symmetric); how a series moves *with* these reference markets can:
 * an index fund tracks the equity market at β ≈ 1, a 3x fund at β ≈ 3, an inverse fund at β < 0, a currency trust
 * with the dollar, a Treasury fund with the rates series. Every run fetches this set once, from its own source.
 * Order is part of the feature spec (features.md): adding, removing or reordering a context means a new spec.
 * `alternates` track the same market closely enough (same or a near-identical index, the same asset, a similar
 * duration; VFITX, a mutual fund, reaches back before 2002) to stand in where a source lacks the primary series, in
 * order of closeness; they are tried only after the primary was looked for in every source. `scaledAlternates` track
 * the member as closely but at another size (a bond fund of another duration) and stand in next with their log moves
 * multiplied by `scale` (`scaleHistory`), so that a β against them reads as one against the member. `inverseAlternates`
 * move against the member and stand in, last, with their prices inverted (`invertBars`).
 */
export const CONTEXT_SET = [
  {
    name: 'equity',
    ticker: 'SPY',
    alternates: ['IVV', 'VOO', 'SPLG', 'VV', 'SCHX', 'IWB', 'VTI', 'ITOT', 'SCHB'],
    // The Nasdaq-100 fund: 0.93 daily correlation with SPY on the development data, β 1.28.
    scaledAlternates: [{ ticker: 'QQQ', scale: 0.8 }],
    what: 'US large-cap equity index fund',
  },
  {
    name: 'rates',
    ticker: 'IEF',
    alternates: ['VGIT', 'SCHR', 'SPTI', 'IEI', 'GOVT', 'VFITX'],
    // Aggregate and long Treasury funds, in order of their daily correlation with IEF on the development data (BIV
    // 0.98, AGG 0.97, BND 0.97, SCHZ 0.97, VGLT 0.92, SPTL 0.92, TLH 0.92, TLT 0.91), scaled by 1 / their β to IEF
    // there (0.81, 0.76, 0.75, 0.76, 1.78, 1.78, 1.53, 1.92): the funds a folder of bond funds most often holds.
    scaledAlternates: [
      { ticker: 'BIV', scale: 1.25 },
      { ticker: 'AGG', scale: 1.3 },
      { ticker: 'BND', scale: 1.3 },
      { ticker: 'SCHZ', scale: 1.3 },
      { ticker: 'VGLT', scale: 0.55 },
      { ticker: 'SPTL', scale: 0.55 },
      { ticker: 'TLH', scale: 0.65 },
      { ticker: 'TLT', scale: 0.5 },
    ],
    what: '7–10 year Treasury fund',
  },
  { name: 'gold', ticker: 'GLD', alternates: ['IAU', 'GLDM', 'SGOL', 'BAR', 'AAAU', 'OUNZ'], what: 'physical gold trust' },
  {
    name: 'commodity',
    ticker: 'DBC',
    alternates: ['PDBC', 'GSG', 'DJP', 'BCI', 'COMT'],
    // Crude-oil futures funds: energy is most of the basket (USO 0.92 and DBO 0.91 daily correlation with DBC on the
    // development data, β 1.63 and 1.50).
    scaledAlternates: [
      { ticker: 'USO', scale: 0.6 },
      { ticker: 'DBO', scale: 0.65 },
    ],
    what: 'broad commodity futures fund (energy-heavy)',
  },
  {
    name: 'dollar',
    ticker: 'UUP',
    alternates: ['USDU'],
    // UDN holds the short side of UUP's own index futures (listed with it, 2007-02). The euro is 58 % of the dollar
    // index: FXE's daily log return against UUP's correlates −0.92 on the development data (0.54 against 0.50 %/day
    // of volatility), and FXE reaches back to 2005-12, UUP only to 2007-02.
    inverseAlternates: ['UDN', 'FXE'],
    what: 'US dollar index fund',
  },
] as const;

export type ContextName = (typeof CONTEXT_SET)[number]['name'];

/**
 * A series that moves against a member, turned into one that moves with it: every price inverted (high and low swap),
 * so each log return changes sign; volume and dates are kept.
 */
export function invertBars(bars: readonly Bar[]): Bar[] {
  return bars.map((b) => ({ ...b, open: 1 / b.open, high: 1 / b.low, low: 1 / b.high, close: 1 / b.close, adjClose: 1 / b.adjClose }));
}

/**
 * The series with its log returns multiplied by k from its first close on (close and adjusted close), and each
 * bar's open, high and low moved to k times their log distance from the close (k > 0): the same days and the same
 * links, k times the moves (a market k times as volatile; a bond fund of k times the duration). k = 1 returns the
 * array itself (no copy).
 */
export function scaleHistory(bars: Bar[], k: number): Bar[] {
  if (bars.length === 0 || k === 1) return bars;
  const c0 = Math.log(bars[0]!.close), a0 = Math.log(bars[0]!.adjClose);
  // A plain loop and one literal per bar: the simulator scales every training history's bars (a closure and a spread
  // per bar were a tenth of its time).
  const out = new Array<Bar>(bars.length);
  for (let i = 0; i < bars.length; i++) {
    const b = bars[i]!;
    const close = Math.exp(c0 + k * (Math.log(b.close) - c0));
    out[i] = {
      date: b.date,
      open: close * Math.exp(k * Math.log(b.open / b.close)),
      high: close * Math.exp(k * Math.log(b.high / b.close)),
      low: close * Math.exp(k * Math.log(b.low / b.close)),
      close,
      adjClose: Math.exp(a0 + k * (Math.log(b.adjClose) - a0)),
      volume: b.volume,
    };
  }
  return out;
}

export const CONTEXT_TICKERS: readonly string[] = CONTEXT_SET.map((c) => c.ticker);

/** One reference series: the ln adjusted close per trading day. */
export interface ContextSeries {
  ticker: string;
  /** Days since 1970-01-01, ascending. */
  dates: Int32Array;
  /** ln of the adjusted close on each date. */
  logClose: Float64Array;
}

/**
 * The context of a run or an evaluation: one entry per CONTEXT_SET member, in its order, `null` where that series
 * could not be had. Missing series never fail a run; their features read as "no context" (see features.md).
 */
export type MarketContext = readonly (ContextSeries | null)[];

/** A context in which nothing is known: every context feature takes its "missing" value. */
export const NO_CONTEXT: MarketContext = CONTEXT_SET.map(() => null);

/** Reference series from cleaned bars (sorted, positive prices; see clean.ts). */
export function contextSeries(ticker: string, bars: readonly Bar[]): ContextSeries {
  const dates = new Int32Array(bars.length);
  const logClose = new Float64Array(bars.length);
  bars.forEach((b, i) => {
    dates[i] = isoToDays(b.date);
    logClose[i] = Math.log(b.adjClose);
  });
  return { ticker, dates, logClose };
}

/**
 * Builds the context from whatever each reference series yielded: bars, or an error / nothing. Returns the context
 * and, per missing member, why it is missing (for logs and summaries).
 */
export function buildContext(byTicker: ReadonlyMap<string, readonly Bar[] | Error | undefined>): {
  context: MarketContext;
  missing: { ticker: string; reason: string }[];
} {
  const missing: { ticker: string; reason: string }[] = [];
  const context = CONTEXT_SET.map(({ ticker }) => {
    const got = byTicker.get(ticker);
    if (got === undefined) {
      missing.push({ ticker, reason: 'not available' });
      return null;
    }
    if (got instanceof Error) {
      missing.push({ ticker, reason: got.message });
      return null;
    }
    if (got.length < 2) {
      missing.push({ ticker, reason: `only ${got.length} bar(s)` });
      return null;
    }
    return contextSeries(ticker, got);
  });
  return { context, missing };
}

/**
 * Context returns aligned to an instrument's trading days: `out[t]` is the context's log return between the dates
 * of bars t−1 and t (a multi-day return when the instrument skipped days, so both sides span the same interval),
 * NaN where the context lacks either date. Exact date matches only: a context that traded on other days says
 * nothing about this interval.
 */
export function alignContext(ctx: ContextSeries, dates: Int32Array): Float64Array {
  // Both date lists ascend: one merge pass finds each instrument date in the context (O(n + m), no hashing; this
  // runs once per context and ticker).
  const out = new Float64Array(dates.length).fill(Number.NaN);
  let j = 0;
  let prev = Number.NaN;
  for (let t = 0; t < dates.length; t++) {
    const d = dates[t]!;
    while (j < ctx.dates.length && ctx.dates[j]! < d) j++;
    const cur = j < ctx.dates.length && ctx.dates[j] === d ? ctx.logClose[j]! : Number.NaN;
    if (t > 0) out[t] = cur - prev; // NaN when either side is missing
    prev = cur;
  }
  return out;
}
