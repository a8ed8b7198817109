import type { Bar, FeatureSeries } from './types.js';
import type { Hidden } from '../router/layout.js';
import { isoToDays } from './dates.js';
import { FEATURE_TABLE, FEATURE_COUNT, LONG, type ContextWindowStats, type RawWindowStats, rawFeatureRow } from './feature-table.js';
import { CONTEXT_SET, NO_CONTEXT, alignContext, type MarketContext } from './context.js';

/** Version of the feature definition; stored with trained weights so a model never meets features it was not trained on. */
export const FEATURE_SPEC = 'v2';
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

/** Per-bar series and prefix sums that make every window statistic O(1) (drawdown and maxima O(window)). */
function windowStats(bars: readonly Bar[], context: MarketContext): RawWindowStats {
  const n = bars.length;
  const dates = new Int32Array(n);
  const r = new Float64Array(n);
  const gap = new Float64Array(n);
  const hl = new Float64Array(n);
  const logVol = new Float64Array(n);
  const close = new Float64Array(n);
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
  const prefix = (f: (t: number) => number): Float64Array => {
    const p = new Float64Array(n + 1);
    for (let t = 0; t < n; t++) {
      const v = f(t);
      p[t + 1] = p[t]! + (Number.isFinite(v) ? v : 0);
    }
    return p;
  };
  const absR = (t: number): number => Math.abs(r[t]!);
  const lag = (t: number): number => (t > 0 ? r[t - 1]! : 0);
  const absLag = (t: number): number => (t > 0 ? Math.abs(r[t - 1]!) : 0);
  const volOk = (t: number): boolean => !Number.isNaN(logVol[t]!);
  const dlvOk = (t: number): boolean => t > 0 && volOk(t) && volOk(t - 1);
  // Volume is kept relative to the first known volume: every volume statistic is a difference or ratio, so the
  // level cancels, and sums of exp(ln V − ln V0) stay far from overflow.
  let v0 = Number.NaN;
  for (let t = 0; t < n; t++) {
    if (Number.isNaN(v0) && volOk(t)) v0 = logVol[t]!;
    logVol[t] = logVol[t]! - v0;
  }
  const pR2 = prefix((t) => r[t]! * r[t]!);
  const sigmaBefore = (t: number): number => {
    // Volatility known at the close of day t−1 (60 days, fewer early on): a jump is judged against it.
    const k = Math.min(60, t - 1);
    return k >= 5 ? Math.sqrt((pR2[t]! - pR2[t - k]!) / k) : Number.POSITIVE_INFINITY;
  };
  const mdd60 = new Float64Array(n);
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
  return {
    n,
    r,
    logVol,
    mdd60,
    pR: prefix((t) => r[t]!),
    pR2,
    pR3: prefix((t) => r[t]! ** 3),
    pR4: prefix((t) => r[t]! ** 4),
    pRLag: prefix((t) => r[t]! * lag(t)),
    pLag: prefix(lag),
    pLag2: prefix((t) => lag(t) * lag(t)),
    pAbs: prefix(absR),
    pAbsLag: prefix(absLag),
    pAbsAbsLag: prefix((t) => absR(t) * absLag(t)),
    pLagAbs: prefix((t) => lag(t) * absR(t)),
    pDown2: prefix((t) => (r[t]! < 0 ? r[t]! * r[t]! : 0)),
    pUp2: prefix((t) => (r[t]! > 0 ? r[t]! * r[t]! : 0)),
    pUp: prefix((t) => (r[t]! > 0 ? 1 : 0)),
    pZero: prefix((t) => (t > 0 && Math.abs(r[t]!) < 5e-5 ? 1 : 0)),
    pHl2: prefix((t) => hl[t]! * hl[t]!),
    pGap2: prefix((t) => gap[t]! * gap[t]!),
    pBigGap: prefix((t) => (t > 0 && Math.abs(gap[t]!) > 4 * sigmaBefore(t) ? 1 : 0)),
    pVolN: prefix((t) => (volOk(t) ? 1 : 0)),
    pLv: prefix((t) => (volOk(t) ? logVol[t]! : 0)),
    pLv2: prefix((t) => (volOk(t) ? logVol[t]! ** 2 : 0)),
    pDlv: prefix((t) => (dlvOk(t) ? logVol[t]! - logVol[t - 1]! : 0)),
    pDlv2: prefix((t) => (dlvOk(t) ? (logVol[t]! - logVol[t - 1]!) ** 2 : 0)),
    pDlvN: prefix((t) => (dlvOk(t) ? 1 : 0)),
    pAbsLv: prefix((t) => (volOk(t) ? absR(t) * logVol[t]! : 0)),
    pAbsV: prefix((t) => (volOk(t) ? absR(t) : 0)),
    pAbs2V: prefix((t) => (volOk(t) ? absR(t) * absR(t) : 0)),
    ctx: context.map((c) => {
      if (c === null) return null;
      const y = alignContext(c, dates);
      const ok = (t: number): boolean => !Number.isNaN(y[t]!);
      const stats: ContextWindowStats = {
        pN: prefix((t) => (ok(t) ? 1 : 0)),
        pX: prefix((t) => (ok(t) ? r[t]! : 0)),
        pY: prefix((t) => (ok(t) ? y[t]! : 0)),
        pXX: prefix((t) => (ok(t) ? r[t]! * r[t]! : 0)),
        pYY: prefix((t) => (ok(t) ? y[t]! * y[t]! : 0)),
        pXY: prefix((t) => (ok(t) ? r[t]! * y[t]! : 0)),
      };
      return stats;
    }),
  };
}
