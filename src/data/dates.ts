/**
 * Calendar helpers for daily bars. Dates are ISO `YYYY-MM-DD` strings of UTC trading days; arithmetic is done on
 * whole days since 1970-01-01 so no time zone ever shifts a bar to another day.
 */

const MS_PER_DAY = 86_400_000;

/**
 * Days since 1970-01-01 of an ISO date, or NaN when the string is not a real calendar date (2021-02-30 included).
 * Parsed by hand (H. Hinnant's days_from_civil): the features read the date of every bar, and the regular expression
 * plus `Date.parse` and a round trip took a fifth of the feature pool's time (bench:pipeline --cpu-prof).
 */
export function isoToDays(iso: string): number {
  if (typeof iso !== 'string' || iso.length !== 10 || iso.charCodeAt(4) !== 45 || iso.charCodeAt(7) !== 45) return Number.NaN;
  const y = digits(iso, 0, 4);
  const m = digits(iso, 5, 2);
  const d = digits(iso, 8, 2);
  if (!(m >= 1 && m <= 12 && d >= 1)) return Number.NaN; // NaN fields fail here too
  const leap = y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
  if (d > (m === 2 ? (leap ? 29 : 28) : DAYS_IN_MONTH[m - 1]!)) return Number.NaN;
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * (m > 2 ? m - 3 : m + 9) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] as const;

/** The decimal number in `s[from, from + len)`, or NaN when any of those characters is not an ASCII digit. */
function digits(s: string, from: number, len: number): number {
  let v = 0;
  for (let i = from; i < from + len; i++) {
    const c = s.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return Number.NaN;
    v = v * 10 + c;
  }
  return v;
}

/**
 * ISO date of a day number, by integer arithmetic (H. Hinnant's civil_from_days) instead of `Date#toISOString`:
 * the simulator and the features call this for every bar, and through `Date` it took 15 % of the feature pool's
 * time on a 5,000-ticker run (bench:pipeline --cpu-prof). Same answers for every day in years 0000–9999.
 */
export function daysToIso(days: number): string {
  if (!Number.isInteger(days) || days < -719_528 || days > 2_932_896) {
    // Fractions and days outside 0000-01-01..9999-12-31 keep Date's behaviour (and its RangeError for NaN).
    return new Date(days * MS_PER_DAY).toISOString().slice(0, 10);
  }
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  const y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  return `${String(y).padStart(4, '0')}-${m < 10 ? '0' : ''}${m}-${d < 10 ? '0' : ''}${d}`;
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
