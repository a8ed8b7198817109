import type { Bar, FeatureSeries } from '../types.js';
import type { Hidden } from '../types.js';
import { isoToDays } from '../dates.js';
import { EQUITY_CONTEXT, FEATURE_TABLE, FEATURE_COUNT, LONG, type ContextWindowStats, type RawWindowStats, rawFeatureRow } from './table.js';
import { CONTEXT_SET, NO_CONTEXT, alignContext, type MarketContext } from './context.js';

/** Version of the feature definition; stored with trained weights so a model never meets features it was not trained on. */
export const FEATURE_SPEC = 'v3';
/** Bars before the first routed day: the longest window (250 returns, one trading year) needs 251 closes. */
export const WARMUP_DAYS = LONG;
/** Clip of every normalised feature. */
export const FEATURE_CLIP = 5;

export { FEATURE_TABLE };

/**
 * Features of one ticker, one token per bar after the first `WARMUP_DAYS`: token i belongs to bar i + WARMUP_DAYS
 * and uses bars up to that one only. Bars must be cleaned (sorted, positive prices; see clean.ts). The H = 16
 * features are the first 16 of the H = 32 ones; every one is documented in docs/features.md. `context` holds the
 * reference markets (context.ts); a missing member turns its features into the documented "no context" values.
 */
export function computeFeatures(
  ticker: string,
  bars: readonly Bar[],
  hidden: Hidden,
  context: MarketContext = NO_CONTEXT,
): FeatureSeries {
  if (hidden !== 16 && hidden !== 32) {
    throw new RangeError(`Expected hidden 16 or 32 for ${ticker} but received ${String(hidden)}`);
  }
  if (context.length !== CONTEXT_SET.length) {
    throw new RangeError(`Expected a context of ${CONTEXT_SET.length} series (or null) for ${ticker} but received ${context.length}`);
  }
  const n = bars.length;
  const days = Math.max(0, n - WARMUP_DAYS);
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
  scratch.reset();
  const s = windowStats(bars, context);
  const raw = new Float64Array(FEATURE_COUNT);
  for (let i = 0; i < days; i++) {
    const t = i + WARMUP_DAYS;
    rawFeatureRow(s, t, raw);
    for (let k = 0; k < hidden; k++) {
      const spec = FEATURE_TABLE[k]!;
      const z = (raw[k]! - spec.center) / spec.scale;
      out.x[i * hidden + k] = Number.isFinite(z) ? Math.max(-FEATURE_CLIP, Math.min(FEATURE_CLIP, z)) : 0;
    }
    const date = isoToDays(bars[t]!.date);
    out.dates[i] = Number.isFinite(date) ? date : 0;
    out.vol[i] = Math.sqrt((s.pR2[t + 1]! - s.pR2[t - 19]!) / 20);
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

/** Per-bar series and prefix sums that make every window statistic O(1) (drawdown and maxima O(window)). */
function windowStats(bars: readonly Bar[], context: MarketContext): RawWindowStats {
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
  for (let t = 60; t < n; t++) {
    let peak = close[t - 60]!;
    let dd = 0;
    for (let j = t - 59; j <= t; j++) {
      const c = close[j]!;
      if (c > peak) peak = c;
      else dd = Math.max(dd, 1 - c / peak);
    }
    mdd60[t] = dd;
  }
  // Every prefix sum in one pass: p[t + 1] = p[t] + v_t, a non-finite v_t counting as 0. One loop with the values in
  // locals instead of a closure per statistic: this pass was most of the fetch pool's time (bench:pipeline --cpu-prof).
  const P = (): Float64Array => scratch.take(n + 1);
  const s = {
    pR: P(), pR2: P(), pR3: P(), pR4: P(), pRLag: P(), pLag: P(), pLag2: P(), pAbs: P(), pAbsLag: P(), pAbsAbsLag: P(),
    pLagAbs: P(), pDown2: P(), pUp2: P(), pUp: P(), pHl2: P(), pGap2: P(), pBigGap: P(), pVolN: P(), pLv: P(),
    pLv2: P(), pDlv: P(), pDlv2: P(), pDlvN: P(), pAbsLv: P(), pAbsV: P(), pAbs2V: P(),
  };
  const fin = (v: number): number => (Number.isFinite(v) ? v : 0);
  const { pR2 } = s;
  for (let t = 0; t < n; t++) {
    const rt = r[t]!;
    const lag = t > 0 ? r[t - 1]! : 0;
    const abs = Math.abs(rt);
    const absLag = t > 0 ? Math.abs(r[t - 1]!) : 0;
    const lv = logVol[t]!;
    const volOk = !Number.isNaN(lv);
    const dlvOk = t > 0 && volOk && !Number.isNaN(logVol[t - 1]!);
    const dlv = dlvOk ? lv - logVol[t - 1]! : 0;
    const u = t + 1;
    s.pR[u] = s.pR[t]! + fin(rt);
    pR2[u] = pR2[t]! + fin(rt * rt);
    s.pR3[u] = s.pR3[t]! + fin(rt ** 3);
    s.pR4[u] = s.pR4[t]! + fin(rt ** 4);
    s.pRLag[u] = s.pRLag[t]! + fin(rt * lag);
    s.pLag[u] = s.pLag[t]! + fin(lag);
    s.pLag2[u] = s.pLag2[t]! + fin(lag * lag);
    s.pAbs[u] = s.pAbs[t]! + fin(abs);
    s.pAbsLag[u] = s.pAbsLag[t]! + fin(absLag);
    s.pAbsAbsLag[u] = s.pAbsAbsLag[t]! + fin(abs * absLag);
    s.pLagAbs[u] = s.pLagAbs[t]! + fin(lag * abs);
    s.pDown2[u] = s.pDown2[t]! + fin(rt < 0 ? rt * rt : 0);
    s.pUp2[u] = s.pUp2[t]! + fin(rt > 0 ? rt * rt : 0);
    s.pUp[u] = s.pUp[t]! + (rt > 0 ? 1 : 0);
    s.pHl2[u] = s.pHl2[t]! + fin(hl[t]! * hl[t]!);
    s.pGap2[u] = s.pGap2[t]! + fin(gap[t]! * gap[t]!);
    // Volatility known at the close of day t−1 (60 days, fewer early on; pR2 up to t is already summed): a jump is
    // judged against it.
    const k = Math.min(60, t - 1);
    const sigmaBefore = k >= 5 ? Math.sqrt((pR2[t]! - pR2[t - k]!) / k) : Number.POSITIVE_INFINITY;
    s.pBigGap[u] = s.pBigGap[t]! + (t > 0 && Math.abs(gap[t]!) > 4 * sigmaBefore ? 1 : 0);
    s.pVolN[u] = s.pVolN[t]! + (volOk ? 1 : 0);
    s.pLv[u] = s.pLv[t]! + fin(volOk ? lv : 0);
    s.pLv2[u] = s.pLv2[t]! + fin(volOk ? lv ** 2 : 0);
    s.pDlv[u] = s.pDlv[t]! + fin(dlv);
    s.pDlv2[u] = s.pDlv2[t]! + fin(dlvOk ? dlv ** 2 : 0);
    s.pDlvN[u] = s.pDlvN[t]! + (dlvOk ? 1 : 0);
    s.pAbsLv[u] = s.pAbsLv[t]! + fin(volOk ? abs * lv : 0);
    s.pAbsV[u] = s.pAbsV[t]! + fin(volOk ? abs : 0);
    s.pAbs2V[u] = s.pAbs2V[t]! + fin(volOk ? abs * abs : 0);
  }
  return {
    n,
    r,
    logVol,
    mdd60,
    ...s,
    ctx: context.map((c, k) => (c === null ? null : contextStats(r, alignContext(c, dates), k === EQUITY_CONTEXT))),
  };
}

/**
 * Sums over the days on which both the instrument's return x and the context's return y are known (y not NaN);
 * with `withDown`, also the same sums over the days on which the context fell (y < 0), for the downside beta.
 */
function contextStats(x: Float64Array, y: Float64Array, withDown = false): ContextWindowStats {
  const st = contextSums(x, y, (yt) => !Number.isNaN(yt));
  if (withDown) st.down = contextSums(x, y, (yt) => yt < 0);
  return st;
}

function contextSums(x: Float64Array, y: Float64Array, use: (yt: number) => boolean): ContextWindowStats {
  const n = x.length;
  const P = (): Float64Array => scratch.take(n + 1);
  const st: ContextWindowStats = { pN: P(), pX: P(), pY: P(), pXX: P(), pYY: P(), pXY: P() };
  const fin = (v: number): number => (Number.isFinite(v) ? v : 0);
  for (let t = 0; t < n; t++) {
    const ok = use(y[t]!);
    const xt = ok ? x[t]! : 0;
    const yt = ok ? y[t]! : 0;
    const u = t + 1;
    st.pN[u] = st.pN[t]! + (ok ? 1 : 0);
    st.pX[u] = st.pX[t]! + fin(xt);
    st.pY[u] = st.pY[t]! + fin(yt);
    st.pXX[u] = st.pXX[t]! + fin(ok ? xt * xt : 0);
    st.pYY[u] = st.pYY[t]! + fin(ok ? yt * yt : 0);
    st.pXY[u] = st.pXY[t]! + fin(ok ? xt * yt : 0);
  }
  return st;
}
