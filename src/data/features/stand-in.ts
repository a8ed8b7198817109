import { DOMAINS, type Domain } from '../../domains.js';
import { daysToIso, isoToDays } from '../dates.js';
import type { Bar } from '../types.js';
import { CONTEXT_SET, type ContextName, type ContextSeries, type MarketContext } from './context.js';

/**
 * Stand-in context: where a folder's reference series (SPY, IEF, DBC or a named alternate) do not reach, the broad
 * ones are stood in for by the folder's own instruments. The equity index is the median daily return of the
 * instruments routed to Equities, the 7–10 year Treasury fund that of the bond funds routed to Fixed Income that move
 * with rates, the broad commodity basket that of the instruments routed to Commodities. A single asset (gold, the
 * dollar) has no such stand-in. Each instrument's stand-ins leave the instrument itself out. No name, label or later
 * bar is read: only the bars of the same days and a first routing of them (docs/features.md, "Stand-in context").
 */

/**
 * The context members a median of routed instruments can stand in for, with the domain whose instruments make it,
 * the least annualised volatility of a member, and how the median's log moves are scaled: by a fixed factor, or
 * (`'members'`) so that it moves as much as its typical member.
 */
export const STAND_IN_SLOTS: readonly { name: ContextName; domain: Domain; minVolatility: number; scale: number | 'members'; what: string }[] = [
  // Stocks share one strong common factor, the market: their median is the market's move, as SPY is.
  { name: 'equity', domain: 'Equities', minVolatility: 0, scale: 1, what: 'routed Equities' },
  // Cash-like and short bond funds barely move: their near-zero returns would pull the median away from a Treasury
  // fund of 7–10 years (5–7 % a year). The median of the rest is an aggregate bond fund, shorter than IEF: scaled as
  // IEF's aggregate stand-ins are (1.3×AGG, 1.3×BND: β 0.76 to IEF on the development data).
  { name: 'rates', domain: 'Fixed Income', minVolatility: 0.03, scale: 1.3, what: 'routed Fixed Income, at least 3 % a year, moves × 1.3' },
  // Commodities share a weak common factor: the median of metals, grains and energy moves far less than any of them,
  // while DBC, mostly energy, moves about as much as a commodity fund does (19.0 % a year over the development folder;
  // the median volatility of the instruments a first routing without context sends to Commodities there: 19–25 %).
  { name: 'commodity', domain: 'Commodities', minVolatility: 0, scale: 'members', what: 'routed Commodities, scaled to their median volatility' },
];

/** Fewest instruments with a return on a day for the stand-in to have that day (the instrument itself left out). */
export const STAND_IN_MIN_MEMBERS = 3;

/**
 * Share of the folder's days that a reference series must span (from its first to its last date) to be kept alone;
 * below it, the stand-in fills the days before and after it.
 */
export const STAND_IN_SPAN_SHARE = 0.98;

/** Annualised volatility of the daily log returns of `bars` (252 days a year); 0 with fewer than two bars. */
export function annualisedVolatility(bars: readonly Bar[]): number {
  let sum = 0;
  let n = 0;
  for (let i = 1; i < bars.length; i++) {
    const r = Math.log(bars[i]!.adjClose / bars[i - 1]!.adjClose);
    if (Number.isFinite(r)) {
      sum += r * r;
      n++;
    }
  }
  return n === 0 ? 0 : Math.sqrt((252 * sum) / n);
}

/**
 * The median daily log return of a group of instruments on every day on which enough of them have one, as a
 * reference series, for the group or for the group without one of its members (`series(ticker)`). Each day's
 * returns are sorted once, so the median without any one member is read off in constant time.
 */
export class MedianSeries {
  private readonly dates: Int32Array;
  /** Per date, the returns in ascending order. */
  private readonly sorted: Float64Array[];
  /** Per member, its rank in each date's sorted returns (−1: no return that day). */
  private readonly rank = new Map<string, Int32Array>();

  constructor(
    private readonly name: string,
    members: readonly { ticker: string; bars: readonly Bar[] }[],
    private readonly minMembers = STAND_IN_MIN_MEMBERS,
  ) {
    if (!(Number.isSafeInteger(minMembers) && minMembers >= 1)) {
      throw new RangeError(`Expected integer ≥ 1 for minMembers of stand-in ${name} but received ${String(minMembers)}`);
    }
    const byDate = new Map<number, { ticker: string; r: number }[]>();
    for (const { ticker, bars } of members) {
      for (let i = 1; i < bars.length; i++) {
        const r = Math.log(bars[i]!.adjClose / bars[i - 1]!.adjClose);
        if (!Number.isFinite(r)) continue;
        const d = isoToDays(bars[i]!.date);
        let day = byDate.get(d);
        if (day === undefined) byDate.set(d, (day = []));
        day.push({ ticker, r });
      }
    }
    this.dates = Int32Array.from([...byDate.keys()].sort((a, b) => a - b));
    this.sorted = [];
    for (const { ticker } of members) this.rank.set(ticker, new Int32Array(this.dates.length).fill(-1));
    this.dates.forEach((d, i) => {
      const day = byDate.get(d)!.sort((a, b) => a.r - b.r);
      this.sorted.push(Float64Array.from(day, (e) => e.r));
      day.forEach((e, k) => {
        this.rank.get(e.ticker)![i] = k;
      });
    });
  }

  /** Whether `ticker` is one of the group. */
  has(ticker: string): boolean {
    return this.rank.has(ticker);
  }

  /** The median series, without `exclude`'s returns when it is a member; null when no day has enough members. */
  series(exclude?: string): ContextSeries | null {
    const rank = exclude === undefined ? undefined : this.rank.get(exclude);
    const dates: number[] = [];
    const medians: number[] = [];
    this.dates.forEach((d, i) => {
      const s = this.sorted[i]!;
      const skip = rank === undefined ? -1 : rank[i]!;
      const n = s.length - (skip >= 0 ? 1 : 0);
      if (n < this.minMembers) return;
      // The j-th smallest return once the member at sorted position `skip` is taken out.
      const at = (j: number): number => s[skip >= 0 && j >= skip ? j + 1 : j]!;
      dates.push(d);
      medians.push(n % 2 === 1 ? at((n - 1) / 2) : 0.5 * (at(n / 2 - 1) + at(n / 2)));
    });
    if (dates.length === 0) return null;
    // The first day's return needs the day before it: a level of 0 there, one day earlier.
    const out: ContextSeries = { ticker: this.name, dates: new Int32Array(dates.length + 1), logClose: new Float64Array(dates.length + 1) };
    out.dates[0] = dates[0]! - 1;
    for (let i = 0; i < dates.length; i++) {
      out.dates[i + 1] = dates[i]!;
      out.logClose[i + 1] = out.logClose[i]! + medians[i]!;
    }
    return out;
  }
}

/** The median of `values` (0 with none). */
function medianOf(values: readonly number[]): number {
  const v = [...values].sort((a, b) => a - b);
  const n = v.length;
  return n === 0 ? 0 : n % 2 === 1 ? v[(n - 1) / 2]! : 0.5 * (v[n / 2 - 1]! + v[n / 2]!);
}

/** The factor that gives `series` an annualised volatility of `target` (1 when either is 0). */
export function scaleToVolatility(series: ContextSeries, target: number): number {
  let sum = 0;
  const n = series.logClose.length - 1;
  for (let i = 1; i <= n; i++) sum += (series.logClose[i]! - series.logClose[i - 1]!) ** 2;
  const vol = n > 0 ? Math.sqrt((252 * sum) / n) : 0;
  return vol > 0 && target > 0 ? target / vol : 1;
}

/** The series with every log move multiplied by `k` (itself for k = 1). */
export function scaleSeries(series: ContextSeries, k: number): ContextSeries {
  if (k === 1) return series;
  const l0 = series.logClose[0] ?? 0;
  return { ticker: series.ticker, dates: series.dates, logClose: series.logClose.map((l) => l0 + k * (l - l0)) };
}

/**
 * `real` where it has dates, the stand-in's returns before its first date and after its last: one series, as a
 * source would give it had the reference existed all along. The stand-in alone when `real` is null.
 */
export function spliceContext(real: ContextSeries | null, standIn: ContextSeries): ContextSeries {
  if (real === null || real.dates.length === 0) return standIn;
  const first = real.dates[0]!;
  const last = real.dates[real.dates.length - 1]!;
  const dates: number[] = [];
  const levels: number[] = [];
  // Before the real series: the stand-in's levels, shifted so that they end where the real series starts (the day
  // into its first date has the stand-in's return when the stand-in has both days, else none).
  let before = -1;
  while (before + 1 < standIn.dates.length && standIn.dates[before + 1]! < first) before++;
  if (before >= 0) {
    const into = before + 1 < standIn.dates.length && standIn.dates[before + 1] === first ? standIn.logClose[before + 1]! - standIn.logClose[before]! : 0;
    const shift = real.logClose[0]! - into - standIn.logClose[before]!;
    for (let i = 0; i <= before; i++) {
      dates.push(standIn.dates[i]!);
      levels.push(standIn.logClose[i]! + shift);
    }
  }
  for (let i = 0; i < real.dates.length; i++) {
    dates.push(real.dates[i]!);
    levels.push(real.logClose[i]!);
  }
  // After it: the stand-in's returns from its last date on (from the real level there).
  let after = standIn.dates.findIndex((d) => d >= last);
  if (after >= 0) {
    let level = real.logClose[real.dates.length - 1]!;
    // The stand-in's return into its first date after `last` needs `last` itself in the stand-in; else it starts there.
    if (standIn.dates[after] !== last) {
      dates.push(standIn.dates[after]!);
      levels.push(level);
    }
    for (after += 1; after < standIn.dates.length; after++) {
      level += standIn.logClose[after]! - standIn.logClose[after - 1]!;
      dates.push(standIn.dates[after]!);
      levels.push(level);
    }
  }
  return { ticker: real.ticker, dates: Int32Array.from(dates), logClose: Float64Array.from(levels) };
}

/** Share of `days` (ascending day numbers) within the series' first and last date; 0 for none. */
export function spanShare(series: ContextSeries | null, days: Int32Array): number {
  if (series === null || series.dates.length === 0 || days.length === 0) return 0;
  const first = series.dates[0]!;
  const last = series.dates[series.dates.length - 1]!;
  let within = 0;
  for (const d of days) if (d >= first && d <= last) within++;
  return within / days.length;
}

/**
 * The factor a slot's median series `unscaled` has its log moves scaled by: the slot's fixed factor, or (`'members'`)
 * the one that gives it its members' median volatility. The one rule for `evaluate`'s stand-ins and training's.
 */
export function slotScale(slot: (typeof STAND_IN_SLOTS)[number], unscaled: ContextSeries, memberVolatilities: readonly number[]): number {
  return slot.scale === 'members' ? scaleToVolatility(unscaled, medianOf(memberVolatilities)) : slot.scale;
}

/** The stand-in context of a folder: which members it fills, from how many instruments, and each ticker's context. */
export interface StandInContext {
  /** Per filled member's reference ticker: what stands in for it and where (for the report). */
  notes: Record<string, string>;
  /** The context of one ticker's features (its own returns left out of every stand-in). */
  contextFor(ticker: string): MarketContext;
}

/**
 * The stand-ins a folder needs: for each member of `STAND_IN_SLOTS` whose series in `context` spans less than
 * `STAND_IN_SPAN_SHARE` of the folder's days (and that `allowed` keeps), the median of the instruments routed to its
 * domain (`routed`: each ticker's domain index from a first routing), spliced around the real series where there is
 * one. Undefined when no member needs one or none could be made.
 */
export function standInContext(
  loaded: readonly { ticker: string; bars: readonly Bar[] }[],
  context: MarketContext,
  routed: ReadonlyMap<string, number>,
  allowed: (name: ContextName) => boolean = () => true,
): StandInContext | undefined {
  const days = Int32Array.from(new Set(loaded.flatMap((l) => l.bars.map((b) => isoToDays(b.date))))).sort();
  // Each instrument's volatility once: every slot's member filter reads it, the commodity scale its members' median.
  const volatility = new Map(loaded.map((l) => [l.ticker, annualisedVolatility(l.bars)]));
  const fills: { index: number; real: ContextSeries | null; median: MedianSeries; shared: ContextSeries; k: number }[] = [];
  const notes: Record<string, string> = {};
  for (const slot of STAND_IN_SLOTS) {
    const index = CONTEXT_SET.findIndex((c) => c.name === slot.name);
    const real = context[index] ?? null;
    if (!allowed(slot.name) || spanShare(real, days) >= STAND_IN_SPAN_SHARE) continue;
    const domain = DOMAINS.indexOf(slot.domain);
    const members = loaded.filter((l) => routed.get(l.ticker) === domain && volatility.get(l.ticker)! >= slot.minVolatility);
    const reference = CONTEXT_SET[index]!.ticker;
    const median = new MedianSeries(`${reference}~`, members);
    const unscaled = median.series();
    if (unscaled === null) continue;
    // One factor for the series and for each ticker's own (the median without it).
    const k = slotScale(slot, unscaled, members.map((m) => volatility.get(m.ticker)!));
    const shared = scaleSeries(unscaled, k);
    fills.push({ index, real, median, shared, k });
    const where = real === null ? 'every day' : `outside ${daysToIso(real.dates[0]!)} … ${daysToIso(real.dates[real.dates.length - 1]!)}`;
    notes[reference] = `stand-in: median daily return of ${members.length} instruments (${slot.what}), ${where}`;
  }
  if (fills.length === 0) return undefined;
  const whole = context.slice();
  for (const f of fills) whole[f.index] = spliceContext(f.real, f.shared);
  return {
    notes,
    contextFor(ticker: string): MarketContext {
      if (!fills.some((f) => f.median.has(ticker))) return whole;
      const own = context.slice();
      for (const f of fills) {
        if (!f.median.has(ticker)) {
          own[f.index] = whole[f.index]!;
          continue;
        }
        const s = f.median.series(ticker);
        own[f.index] = s === null ? f.real : spliceContext(f.real, scaleSeries(s, f.k));
      }
      return own;
    },
  };
}
