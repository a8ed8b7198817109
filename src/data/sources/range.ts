import { MAX_RANGE_DAYS } from '../../limits.js';
import type { Bar, FetchRange } from '../types.js';
import { WARMUP_DAYS } from '../features/compute.js';
import { isoToDays, todayIso } from '../dates.js';

/** Checks a FetchRange and fills the default end; throws with the message shape on bad input. */
export function resolveRange(range: FetchRange, today: string = todayIso()): { days: number; end: string } {
  if (range === null || typeof range !== 'object') {
    throw new TypeError(`Expected object {days, end?} for range but received ${String(range)}`);
  }
  if (!Number.isInteger(range.days) || range.days < 1 || range.days > MAX_RANGE_DAYS) {
    throw new RangeError(`Expected integer in [1, ${MAX_RANGE_DAYS}] for range.days but received ${String(range.days)}`);
  }
  const end = range.end ?? today;
  if (!Number.isFinite(isoToDays(end))) {
    throw new TypeError(`Expected ISO date YYYY-MM-DD for range.end but received ${JSON.stringify(end)}`);
  }
  return { days: range.days, end };
}

/**
 * Trading days a source fetches for `days` routed days: a year of history (WARMUP_DAYS) before the first routed day,
 * so a full record routes on full-year windows. A ticker with fewer bars routes on what it has, from
 * MIN_HISTORY_BARS bars on (the feature task keeps the last `days` tokens; docs/features.md, "Short histories").
 */
export function barsNeeded(days: number): number {
  return days + WARMUP_DAYS;
}

/**
 * Calendar window that holds `tradingDays` trading days ending at `end`: 7/5 calendar days per trading day plus
 * 5 % and ten days of slack for holidays (US markets close on ≈ 9–10 weekdays a year).
 */
export function calendarWindow(tradingDays: number, end: string): { start: string; endExclusive: string } {
  const endDays = isoToDays(end);
  const span = Math.ceil((tradingDays * 7 * 1.05) / 5) + 10;
  const toIso = (d: number): string => new Date(d * 86_400_000).toISOString().slice(0, 10);
  return { start: toIso(endDays - span), endExclusive: toIso(endDays + 1) };
}

/** The last `barsNeeded(days)` bars dated on or before `end`. */
export function trimToRange(bars: Bar[], days: number, end: string): Bar[] {
  let last = bars.length;
  while (last > 0 && bars[last - 1]!.date > end) last--;
  return bars.slice(Math.max(0, last - barsNeeded(days)), last);
}
