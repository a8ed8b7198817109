/**
 * Calendar helpers for daily bars. Dates are ISO `YYYY-MM-DD` strings of UTC trading days; arithmetic is done on
 * whole days since 1970-01-01 so no time zone ever shifts a bar to another day.
 */

const MS_PER_DAY = 86_400_000;
const ISO_DATE = /^\d{4}-\d{2}-\d{2}$/;

/** Days since 1970-01-01 of an ISO date, or NaN when the string is not a real calendar date. */
export function isoToDays(iso: string): number {
  if (!ISO_DATE.test(iso)) return Number.NaN;
  const ms = Date.parse(`${iso}T00:00:00Z`);
  if (!Number.isFinite(ms)) return Number.NaN;
  const days = ms / MS_PER_DAY;
  // Date.parse rolls 2021-02-30 over to March; reject such dates instead of moving them.
  return daysToIso(days) === iso ? days : Number.NaN;
}

export function daysToIso(days: number): string {
  return new Date(days * MS_PER_DAY).toISOString().slice(0, 10);
}

/** 0 = Sunday … 6 = Saturday. 1970-01-01 was a Thursday. */
export function weekday(days: number): number {
  return (((days + 4) % 7) + 7) % 7;
}

export function isBusinessDay(days: number): boolean {
  const w = weekday(days);
  return w !== 0 && w !== 6;
}

/** The `n` business days (Mon–Fri, holidays ignored) ending on or before `end`, ascending, as days since epoch. */
export function businessDaysEnding(endDays: number, n: number): Int32Array {
  const out = new Int32Array(n);
  let d = endDays;
  while (!isBusinessDay(d)) d--;
  for (let i = n - 1; i >= 0; i--) {
    out[i] = d;
    d--;
    while (!isBusinessDay(d)) d--;
  }
  return out;
}

/** Business days strictly between two dates (exclusive of both ends). */
export function businessDaysBetween(fromDays: number, toDays: number): number {
  let count = 0;
  for (let d = fromDays + 1; d < toDays; d++) if (isBusinessDay(d)) count++;
  return count;
}

/** Today's UTC date as ISO. */
export function todayIso(): string {
  return new Date().toISOString().slice(0, 10);
}
