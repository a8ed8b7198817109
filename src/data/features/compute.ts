import type { Bar, FeatureSeries } from '../types.js';
import type { Hidden } from '../types.js';
import { isoToDays } from '../dates.js';
import { DEFAULT_MIN_HISTORY_BARS, MIN_HISTORY_BARS_RANGE } from '../../config.js';
import { EQUITY_CONTEXT, FEATURE_TABLE, FEATURE_COUNT, LONG, type ContextWindowStats, type RawWindowStats, rawFeatureRow } from './table.js';
import { CONTEXT_SET, NO_CONTEXT, alignContext, type MarketContext } from './context.js';

/** Version of the feature definition; stored with trained weights so a model never meets features it was not trained on. */
export const FEATURE_SPEC = 'v6';
/**
 * History the sources fetch before the first routed day (`barsNeeded = days + WARMUP_DAYS`): the longest window
 * (250 returns, one trading year) then sees 251 closes. A ticker with less history routes on what it has, from
 * `minBars` bars on (docs/features.md, "Short histories").
 */
export const WARMUP_DAYS = LONG;
/** Fewest bars `computeFeatures` makes a token from when the caller names none (`MIN_HISTORY_BARS` of the configuration). */
export const MIN_HISTORY_BARS = DEFAULT_MIN_HISTORY_BARS;
/** Clip of every normalised feature. */
export const FEATURE_CLIP = 5;

export { FEATURE_TABLE };

const CENTER = Float64Array.from(FEATURE_TABLE, (f) => f.center);
const INV_SCALE = Float64Array.from(FEATURE_TABLE, (f) => 1 / f.scale);

export interface FeatureOptions {
  /**
   * Fewest bars a token is made from: the first token belongs to bar `minBars − 1` (its windows hold the
   * `minBars − 1` returns that exist). Integer ≥ 20. @defaultValue MIN_HISTORY_BARS (60)
   */
  minBars?: number;
  /**
   * Only the last `days` tokens are computed and returned (the routed days of a request; the bars before them are
   * history). @defaultValue every token from bar `minBars − 1` on
   */
  days?: number;
}

/**
 * Number of tokens `computeFeatures` returns for `bars` bars: one per bar from bar `minBars − 1` on, at most `days`.
 */
export function tokenCount(bars: number, opts: FeatureOptions = {}): number {
  const all = Math.max(0, bars - (opts.minBars ?? MIN_HISTORY_BARS) + 1);
  return opts.days === undefined ? all : Math.min(all, opts.days);
}

/**
 * Features of one ticker, one token per bar from bar `minBars − 1` on (the last `days` of them when asked): token i
 * belongs to bar `n − count + i` (bar `i + minBars − 1` when all are kept) and uses bars up to that one only. Every
 * window statistic reads the min(k, t) returns that exist at bar t, and `history_250` tells how many that was. Bars
 * must be cleaned (sorted, positive prices; see clean.ts). The H = 16 features are the first 16 of the H = 32 ones;
 * every one is documented in docs/features.md. `context` holds the reference markets (context.ts); a missing member
 * turns its features into the documented "no context" values.
 */
export function computeFeatures(
  ticker: string,
  bars: readonly Bar[],
  hidden: Hidden,
  context: MarketContext = NO_CONTEXT,
  opts: FeatureOptions = {},
): FeatureSeries {
  if (hidden !== 16 && hidden !== 32) {
    throw new RangeError(`Expected hidden 16 or 32 for ${ticker} but received ${String(hidden)}`);
  }
  if (context.length !== CONTEXT_SET.length) {
    throw new RangeError(`Expected a context of ${CONTEXT_SET.length} series (or null) for ${ticker} but received ${context.length}`);
  }
  const minBars = opts.minBars ?? MIN_HISTORY_BARS;
  if (!Number.isSafeInteger(minBars) || minBars < MIN_HISTORY_BARS_RANGE.min) {
    throw new RangeError(`Expected integer ≥ ${MIN_HISTORY_BARS_RANGE.min} for minBars of ${ticker} but received ${String(opts.minBars)}`);
  }
  if (opts.days !== undefined && !(Number.isSafeInteger(opts.days) && opts.days >= 1)) {
    throw new RangeError(`Expected integer ≥ 1 for days of ${ticker} but received ${String(opts.days)}`);
  }
  const n = bars.length;
  const days = tokenCount(n, { minBars, ...(opts.days !== undefined ? { days: opts.days } : {}) });
  const out: FeatureSeries = {
    ticker,
    hidden,
    dates: new Int32Array(days),
    x: new Float32Array(days * hidden),
    vol: new Float32Array(days),
    risk: new Float32Array(days),
    ret: new Float32Array(days),
  };
  if (days === 0) return out;
  const first = n - days;
  scratch.reset();
  const s = windowStats(bars, context, first);
  const raw = new Float64Array(FEATURE_COUNT);
  for (let i = 0; i < days; i++) {
    const t = first + i;
    rawFeatureRow(s, t, raw, hidden);
    const x = out.x;
    const row = i * hidden;
    for (let k = 0; k < hidden; k++) {
      const z = (raw[k]! - CENTER[k]!) * INV_SCALE[k]!;
      // Non-finite values become 0 (z − z is NaN for them), the rest are clipped.
      x[row + k] = z - z === 0 ? (z > FEATURE_CLIP ? FEATURE_CLIP : z < -FEATURE_CLIP ? -FEATURE_CLIP : z) : 0;
    }
    const date = s.dates[t]!;
    out.dates[i] = Number.isFinite(date) ? date : 0;
    const w20 = Math.min(20, t);
    out.vol[i] = Math.sqrt((s.pR2[t + 1]! - s.pR2[t + 1 - w20]!) / w20);
    out.risk[i] = s.mdd60[t]!;
    out.ret[i] = s.r[t]!;
  }
  return out;
}

/**
 * Zero-filled float arrays for `windowStats`, reused from one ticker to the next: a ticker needs about sixty of them
 * (n + 1 floats each, 140 kB for 310 bars), only while `computeFeatures` runs; allocating them afresh kept V8's
 * helper threads (mostly garbage collection) busy for a third of the fetch worker's CPU time (5,000 tickers).
 */
class Scratch {
  private readonly arrays: Float64Array[] = [];
  private used = 0;

  /** Everything taken so far may be handed out again. */
  reset(): void {
    this.used = 0;
  }

  take(len: number): Float64Array {
    let a = this.arrays[this.used];
    if (a === undefined || a.length < len) {
      a = new Float64Array(Math.max(len, 512));
      this.arrays[this.used] = a;
    }
    this.used += 1;
    return a.subarray(0, len).fill(0);
  }
}

const scratch = new Scratch();

/**
 * Per-bar series and prefix sums that make every window statistic O(1); the 61-close drawdown (O(window)) and the
 * long-window maximum of |r| (a monotone queue, O(1) amortised) only for the token bars `first … n − 1`.
 */
function windowStats(bars: readonly Bar[], context: MarketContext, first: number): RawWindowStats {
  const n = bars.length;
  const dates = new Int32Array(n);
  const r = scratch.take(n);
  const gap = scratch.take(n);
  const hl = scratch.take(n);
  const logVol = scratch.take(n);
  const close = scratch.take(n);
  for (let t = 0; t < n; t++) {
    const b = bars[t]!;
    dates[t] = isoToDays(b.date);
    close[t] = b.adjClose;
    hl[t] = Math.log(b.high / b.low);
    logVol[t] = b.volume !== null && b.volume > 0 ? Math.log(b.volume) : Number.NaN;
    if (t > 0) {
      const prev = bars[t - 1]!.adjClose;
      r[t] = Math.log(b.adjClose / prev);
      gap[t] = Math.log(b.open / prev);
    }
  }
  // Volume is kept relative to the first known volume: every volume statistic is a difference or ratio, so the
  // level cancels, and sums of exp(ln V − ln V0) stay far from overflow.
  let v0 = Number.NaN;
  for (let t = 0; t < n; t++) {
    if (Number.isNaN(v0) && !Number.isNaN(logVol[t]!)) v0 = logVol[t]!;
    logVol[t] = logVol[t]! - v0;
  }
  const mdd60 = scratch.take(n);
  for (let t = Math.max(first, 1); t < n; t++) {
    const from = Math.max(0, t - 60);
    let peak = close[from]!;
    let dd = 0;
    for (let j = from + 1; j <= t; j++) {
      const c = close[j]!;
      if (c > peak) peak = c;
      else dd = Math.max(dd, 1 - c / peak);
    }
    mdd60[t] = dd;
  }
  // Largest |r| over the long window of each token bar, returns max(1, t − LONG + 1) … t: indices in a queue whose
  // |r| decrease, the front leaving once it falls out of the window.
  const maxAbsL = scratch.take(n);
  const queue = new Int32Array(n);
  let head = 0;
  let tail = 0;
  for (let j = Math.max(1, first - LONG + 1); j < n; j++) {
    const a = Math.abs(r[j]!);
    while (tail > head && Math.abs(r[queue[tail - 1]!]!) <= a) tail--;
    queue[tail++] = j;
    if (j >= first) {
      const from = Math.max(1, j - LONG + 1);
      while (queue[head]! < from) head++;
      maxAbsL[j] = Math.abs(r[queue[head]!]!);
    }
  }
  // Every prefix sum in one pass: p[t + 1] = p[t] + v_t, a non-finite v_t counting as 0. One loop with the values in
  // locals instead of a closure per statistic: this pass was most of the fetch pool's time (bench:pipeline --cpu-prof).
  const P = (): Float64Array => scratch.take(n + 1);
  const s = {
    pR: P(), pR2: P(), pR3: P(), pR4: P(), pRLag: P(), pLag: P(), pLag2: P(), pAbs: P(), pAbsLag: P(), pAbsAbsLag: P(),
    pLagAbs: P(), pDown2: P(), pUp2: P(), pUp: P(), pHl2: P(), pRanged: P(), pBigGap: P(), pVolN: P(), pLv: P(),
    pLv2: P(), pDlv: P(), pDlv2: P(), pDlvN: P(), pAbsLv: P(), pAbsV: P(), pAbs2V: P(),
  };
  const fin = (v: number): number => (Number.isFinite(v) ? v : 0);
  const { pR, pR2, pR3, pR4, pRLag, pLag, pLag2, pAbs, pAbsLag, pAbsAbsLag, pLagAbs, pDown2, pUp2, pUp, pHl2, pRanged, pBigGap } = s;
  const { pVolN, pLv, pLv2, pDlv, pDlv2, pDlvN, pAbsLv, pAbsV, pAbs2V } = s;
  for (let t = 0; t < n; t++) {
    const rt = r[t]!;
    const r2 = rt * rt;
    const lag = t > 0 ? r[t - 1]! : 0;
    const abs = Math.abs(rt);
    const absLag = Math.abs(lag);
    const lv = logVol[t]!;
    const volOk = !Number.isNaN(lv);
    const dlvOk = t > 0 && volOk && !Number.isNaN(logVol[t - 1]!);
    const dlv = dlvOk ? lv - logVol[t - 1]! : 0;
    const g = gap[t]!;
    const h = hl[t]!;
    const u = t + 1;
    pR[u] = pR[t]! + fin(rt);
    pR2[u] = pR2[t]! + fin(r2);
    pR3[u] = pR3[t]! + fin(r2 * rt);
    pR4[u] = pR4[t]! + fin(r2 * r2);
    pRLag[u] = pRLag[t]! + fin(rt * lag);
    pLag[u] = pLag[t]! + fin(lag);
    pLag2[u] = pLag2[t]! + fin(lag * lag);
    pAbs[u] = pAbs[t]! + fin(abs);
    pAbsLag[u] = pAbsLag[t]! + fin(absLag);
    pAbsAbsLag[u] = pAbsAbsLag[t]! + fin(abs * absLag);
    pLagAbs[u] = pLagAbs[t]! + fin(lag * abs);
    pDown2[u] = pDown2[t]! + fin(rt < 0 ? r2 : 0);
    pUp2[u] = pUp2[t]! + fin(rt > 0 ? r2 : 0);
    pUp[u] = pUp[t]! + (rt > 0 ? 1 : 0);
    pHl2[u] = pHl2[t]! + fin(h * h);
    pRanged[u] = pRanged[t]! + (h > 0 ? 1 : 0);
    // Volatility known at the close of day t−1 (60 days, fewer early on; pR2 up to t is already summed): a jump is
    // judged against it.
    const k = Math.min(60, t - 1);
    const sigmaBefore = k >= 5 ? Math.sqrt((pR2[t]! - pR2[t - k]!) / k) : Number.POSITIVE_INFINITY;
    pBigGap[u] = pBigGap[t]! + (t > 0 && Math.abs(g) > 4 * sigmaBefore ? 1 : 0);
    pVolN[u] = pVolN[t]! + (volOk ? 1 : 0);
    pLv[u] = pLv[t]! + fin(volOk ? lv : 0);
    pLv2[u] = pLv2[t]! + fin(volOk ? lv * lv : 0);
    pDlv[u] = pDlv[t]! + fin(dlv);
    pDlv2[u] = pDlv2[t]! + fin(dlv * dlv);
    pDlvN[u] = pDlvN[t]! + (dlvOk ? 1 : 0);
    pAbsLv[u] = pAbsLv[t]! + fin(volOk ? abs * lv : 0);
    pAbsV[u] = pAbsV[t]! + fin(volOk ? abs : 0);
    pAbs2V[u] = pAbs2V[t]! + fin(volOk ? r2 : 0);
  }
  return {
    n,
    dates,
    r,
    logVol,
    mdd60,
    maxAbsL,
    ...s,
    ctx: context.map((c, k) => (c === null ? null : contextStats(r, alignContext(c, dates), k === EQUITY_CONTEXT))),
  };
}

/**
 * Sums over the days on which both the instrument's return x and the context's return y are known (y not NaN);
 * with `withDown`, also the same sums over the days on which the context fell (y < 0), for the downside beta.
 */
function contextStats(x: Float64Array, y: Float64Array, withDown = false): ContextWindowStats {
  const st = contextSums(x, y, false);
  if (withDown) st.down = contextSums(x, y, true);
  return st;
}

/** Prefix sums over the days with a known context return (`downOnly`: the days it fell). */
function contextSums(x: Float64Array, y: Float64Array, downOnly: boolean): ContextWindowStats {
  const n = x.length;
  const P = (): Float64Array => scratch.take(n + 1);
  const st: ContextWindowStats = { pN: P(), pX: P(), pY: P(), pXX: P(), pYY: P(), pXY: P() };
  const { pN, pX, pY, pXX, pYY, pXY } = st;
  const fin = (v: number): number => (Number.isFinite(v) ? v : 0);
  for (let t = 0; t < n; t++) {
    const yv = y[t]!;
    // NaN (no context return) fails both tests.
    const ok = downOnly ? yv < 0 : yv === yv;
    const xt = ok ? x[t]! : 0;
    const yt = ok ? yv : 0;
    const u = t + 1;
    pN[u] = pN[t]! + (ok ? 1 : 0);
    pX[u] = pX[t]! + fin(xt);
    pY[u] = pY[t]! + fin(yt);
    pXX[u] = pXX[t]! + fin(xt * xt);
    pYY[u] = pYY[t]! + fin(yt * yt);
    pXY[u] = pXY[t]! + fin(xt * yt);
  }
  return st;
}
