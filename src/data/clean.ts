import type { Bar, DataQuality } from './types.js';
import { businessDaysBetween, isoToDays } from './dates.js';

/** A bar as a source delivers it: any price may be missing or junk until cleaning has looked at it. */
export interface RawBar {
  date: string;
  open: number | null;
  high: number | null;
  low: number | null;
  close: number | null;
  adjClose: number | null;
  volume: number | null;
}

export interface CleanResult {
  bars: Bar[];
  quality: DataQuality;
}

/** Split ratios searched for among day-over-day jumps (forward and reverse splits). */
const SPLIT_FACTORS = [2, 3, 4, 5, 8, 10, 15, 20, 25, 50];
/** How close (in log terms) both the open and the close must sit to an exact k:1 ratio to count as a split. */
const SPLIT_TOLERANCE = 0.025;

const goodPrice = (v: number | null): v is number => v !== null && Number.isFinite(v) && v > 0;

/**
 * The one cleaning step every source goes through.
 * - `rows` counts what the source read (its malformed lines included);
 * - rows with a bad date are dropped (`malformed`), rows with a null/NaN/non-positive price are dropped (`nulls`);
 * - rows are sorted by date (`reordered` counts rows that moved) and repeated dates keep their first row (`duplicates`);
 * - when `close != adjClose`, open/high/low are scaled by `adjClose/close` so every price of a bar is on the adjusted
 *   scale (returns come from `adjClose`, ranges and gaps from the scaled open/high/low);
 * - high/low are widened to contain open and close (some vendors print a high below the close);
 * - an unapplied split (adjusted close AND open jump by exactly k:1 overnight) is undone on the earlier bars, because a
 *   single 25-sigma fake return would poison sixty days of tail statistics;
 * - volume that is null, NaN or negative becomes null; `gaps` counts missing business days between bars.
 */
export function cleanBars(rows: readonly RawBar[], initial?: Partial<DataQuality>): CleanResult {
  const quality: DataQuality = {
    rows: rows.length + (initial?.malformed ?? 0),
    nulls: initial?.nulls ?? 0,
    duplicates: initial?.duplicates ?? 0,
    gaps: 0,
    reordered: initial?.reordered ?? 0,
    malformed: initial?.malformed ?? 0,
    splits: 0,
  };
  const keyed: { day: number; index: number; bar: Bar }[] = [];
  rows.forEach((r, index) => {
    const day = isoToDays(r.date);
    if (!Number.isFinite(day)) {
      quality.malformed = (quality.malformed ?? 0) + 1;
      return;
    }
    if (!goodPrice(r.open) || !goodPrice(r.high) || !goodPrice(r.low) || !goodPrice(r.close) || !goodPrice(r.adjClose)) {
      quality.nulls++;
      return;
    }
    const k = r.adjClose / r.close;
    const open = r.open * k;
    const c = r.adjClose;
    const high = Math.max(r.high * k, open, c);
    const low = Math.min(r.low * k, open, c);
    const volume = r.volume !== null && Number.isFinite(r.volume) && r.volume >= 0 ? r.volume : null;
    keyed.push({ day, index, bar: { date: r.date, open, high, low, close: r.close, adjClose: c, volume } });
  });

  const sorted = keyed.slice().sort((a, b) => a.day - b.day || a.index - b.index);
  for (let i = 0; i < sorted.length; i++) if (sorted[i] !== keyed[i]) quality.reordered++;

  const bars: Bar[] = [];
  const days: number[] = [];
  for (const k of sorted) {
    if (days.length > 0 && days[days.length - 1] === k.day) {
      quality.duplicates++;
      continue;
    }
    bars.push(k.bar);
    days.push(k.day);
  }
  for (let i = 1; i < days.length; i++) quality.gaps += businessDaysBetween(days[i - 1]!, days[i]!);
  quality.splits = repairSplits(bars);
  return { bars, quality };
}

/** Finds k:1 jumps at both the open and the close and rescales every earlier bar by k. Returns the count. */
function repairSplits(bars: Bar[]): number {
  let found = 0;
  for (let i = 1; i < bars.length; i++) {
    const prev = bars[i - 1]!;
    const cur = bars[i]!;
    const lc = Math.log(cur.adjClose / prev.adjClose);
    const lo = Math.log(cur.open / prev.adjClose);
    if (Math.abs(lc) < Math.log(2) - SPLIT_TOLERANCE) continue;
    for (const f of SPLIT_FACTORS) {
      const lf = Math.sign(lc) * Math.log(f);
      if (Math.abs(lc - lf) < SPLIT_TOLERANCE && Math.abs(lo - lf) < SPLIT_TOLERANCE) {
        const scale = Math.exp(lf);
        for (let j = 0; j < i; j++) {
          const b = bars[j]!;
          b.open *= scale;
          b.high *= scale;
          b.low *= scale;
          b.close *= scale;
          b.adjClose *= scale;
          if (b.volume !== null) b.volume /= scale;
        }
        found++;
        break;
      }
    }
  }
  return found;
}
