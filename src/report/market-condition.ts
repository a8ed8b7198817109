import { DOMAINS, NUM_DOMAINS } from '../domains.js';
import type { RunSummary, TickerSummary } from './types.js';
import { UNKNOWN_CLASS } from './theme.js';

/** Trading days per year, for annualising daily figures. */
export const TRADING_DAYS = 252;

/**
 * Thresholds on annualised figures. A class is in a "crisis" when it is both very volatile and falling, "high
 * volatility" when volatile alone; otherwise its return decides bull / bear / sideways. The 30 % volatility line is
 * also the upper regime band of the time-series report, so the two reports agree.
 */
export const CONDITION_THRESHOLDS = {
  crisisVol: 0.4,
  crisisReturn: -0.2,
  highVol: 0.3,
  bullReturn: 0.1,
  bearReturn: -0.1,
  /** Regime bands of the time-series chart: below `lowVol` is calm, above `highVol` is stressed. */
  lowVol: 0.15,
} as const;

export type MarketCondition = 'crisis' | 'high volatility' | 'bull' | 'bear' | 'sideways';

export function annualisedVol(dailyVol: number): number {
  return dailyVol * Math.sqrt(TRADING_DAYS);
}

/** Log return over `days` days scaled to a year (0 when no days were routed). */
export function annualisedReturn(totalReturn: number, days: number): number {
  return days > 0 ? (totalReturn * TRADING_DAYS) / days : 0;
}

export function marketCondition(annVol: number, annReturn: number): MarketCondition {
  const t = CONDITION_THRESHOLDS;
  if (annVol >= t.crisisVol && annReturn <= t.crisisReturn) return 'crisis';
  if (annVol >= t.highVol) return 'high volatility';
  if (annReturn >= t.bullReturn) return 'bull';
  if (annReturn <= t.bearReturn) return 'bear';
  return 'sideways';
}

export function classOf(t: { class?: string | undefined }): string {
  return t.class ?? UNKNOWN_CLASS;
}

export interface ClassStats {
  /** Asset class, or `Unknown`. */
  name: string;
  tickers: number;
  days: number;
  /** Mean over tickers of annualised mean daily volatility. */
  annVol: number;
  /** Mean over tickers of annualised log return. */
  annReturn: number;
  condition: MarketCondition;
  /** Domain that received the most ticker-days of this class, and its share of them. */
  primaryDomain: string;
  primaryShare: number;
  /** Mean confidence, weighted by routed days. */
  confidence: number;
  domainDays: number[];
}

/** Asset classes in a stable order: the domains first (as in DOMAINS), then `Unknown`, each only when present. */
export function classOrder(tickers: readonly { class?: string | undefined }[]): string[] {
  const present = new Set(tickers.map(classOf));
  return [...DOMAINS, UNKNOWN_CLASS].filter((c) => present.has(c));
}

export function classStats(summary: RunSummary): ClassStats[] {
  return classOrder(summary.tickers).map((name) => statsFor(name, summary.tickers.filter((t) => classOf(t) === name)));
}

function statsFor(name: string, group: readonly TickerSummary[]): ClassStats {
  const domainDays: number[] = new Array<number>(NUM_DOMAINS).fill(0);
  let days = 0;
  let confSum = 0;
  let volSum = 0;
  let retSum = 0;
  for (const t of group) {
    t.domainDays.forEach((d, i) => (domainDays[i] = (domainDays[i] ?? 0) + d));
    days += t.days;
    confSum += t.confidence * t.days;
    volSum += annualisedVol(t.meanVol);
    retSum += annualisedReturn(t.totalReturn, t.days);
  }
  let primary = 0;
  for (let d = 1; d < NUM_DOMAINS; d++) if ((domainDays[d] ?? 0) > (domainDays[primary] ?? 0)) primary = d;
  const annVol = group.length > 0 ? volSum / group.length : 0;
  const annReturn = group.length > 0 ? retSum / group.length : 0;
  return {
    name,
    tickers: group.length,
    days,
    annVol,
    annReturn,
    condition: marketCondition(annVol, annReturn),
    primaryDomain: DOMAINS[primary] ?? DOMAINS[0],
    primaryShare: days > 0 ? (domainDays[primary] ?? 0) / days : 0,
    confidence: days > 0 ? confSum / days : 0,
    domainDays,
  };
}
