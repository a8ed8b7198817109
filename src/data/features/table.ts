import { CONTEXT_SET } from './context.js';

/**
 * The feature table: raw statistics per day and the fixed constants that normalise them. Constants were set once
 * from the simulator and the development data (see docs/features.md) and are part of FEATURE_SPEC: changing one
 * means a new spec and retraining. Never replace them with per-window z-scores: the absolute levels are the signal.
 */

/** Per-bar series and prefix sums (`p*[t+1] = Σ_{j≤t}`) prepared by compute.ts. */
export interface RawWindowStats {
  n: number;
  /** Days since 1970-01-01 of each bar (NaN-free: an unreadable date reads as 0 by Int32 conversion). */
  dates: Int32Array;
  r: Float64Array;
  /** ln volume relative to the first known volume; NaN where unknown. */
  logVol: Float64Array;
  /**
   * Maximum drawdown of the adjusted close over the last 61 closes (fewer early on), and the largest |r| of the
   * long window: filled for the token bars only (`t ≥ first`), the only bars a row is read at.
   */
  mdd60: Float64Array;
  maxAbsL: Float64Array;
  /** Sums of r, r², r³, r⁴. */
  pR: Float64Array;
  pR2: Float64Array;
  pR3: Float64Array;
  pR4: Float64Array;
  /** r_t·r_{t−1}, r_{t−1}, r_{t−1}², |r_t|, |r_{t−1}|, |r_t|·|r_{t−1}|, r_{t−1}·|r_t|. */
  pRLag: Float64Array;
  pLag: Float64Array;
  pLag2: Float64Array;
  pAbs: Float64Array;
  pAbsLag: Float64Array;
  pAbsAbsLag: Float64Array;
  pLagAbs: Float64Array;
  /** Squared negative / positive returns; up days. */
  pDown2: Float64Array;
  pUp2: Float64Array;
  pUp: Float64Array;
  /** ln(high/low)². */
  pHl2: Float64Array;
  /** Bars whose high is above their low (a vendor that gives closes only has none). */
  pRanged: Float64Array;
  /** Days whose overnight gap exceeded 4 × the 60-day volatility known the day before. */
  pBigGap: Float64Array;
  /** Volume: count of known days; ln V, ln V²; Δln V, Δln V² and count. */
  pVolN: Float64Array;
  pLv: Float64Array;
  pLv2: Float64Array;
  pDlv: Float64Array;
  pDlv2: Float64Array;
  pDlvN: Float64Array;
  /** |r|·ln V, |r|, |r|² over days with known volume. */
  pAbsLv: Float64Array;
  pAbsV: Float64Array;
  pAbs2V: Float64Array;
  /** One entry per CONTEXT_SET member, null when that series is missing. */
  ctx: (ContextWindowStats | null)[];
}

/**
 * Sums over the days on which both the instrument's return x and the context's return y over the same interval are
 * known: count, Σx, Σy, Σx², Σy², Σxy.
 */
export interface ContextWindowStats {
  pN: Float64Array;
  pX: Float64Array;
  pY: Float64Array;
  pXX: Float64Array;
  pYY: Float64Array;
  pXY: Float64Array;
  /** The same sums over the days on which the context fell (equity context only), for downside and upside betas. */
  down?: ContextWindowStats;
}

/** Index in CONTEXT_SET of the equity reference market, whose down and up days split the asymmetry feature. */
export const EQUITY_CONTEXT = CONTEXT_SET.findIndex((c) => c.name === 'equity');

export interface FeatureSpecRow {
  name: string;
  /** Raw value mapped to 0. */
  center: number;
  /** Raw units per normalised unit. */
  scale: number;
}

const f = (name: string, center: number, scale: number): FeatureSpecRow => ({ name, center, scale });
/** ln of a daily volatility: ln(0.006) ≈ −5.1 maps to 0, one unit per factor e^1.2 ≈ 3.3. */
const LOG_VOL_CENTER = -5.1;
const LOG_VOL_SCALE = 1.2;
/** ln(σ / σ_equity) ≈ −0.6 (a bond-and-stock middle) maps to 0; same unit as the log volatilities. */
const REL_VOL_CENTER = -0.6;
/** Floor of any volatility before a log: 0.1 bp a day, below a one-cent tick on a $1,000 price. */
export const VOL_FLOOR = 1e-5;
/** Centre of `range_ratio_60` (raw), also its value where the bars carry no intraday range. */
const RANGE_RATIO_CENTER = -0.4;
/** Longest window, in returns. */
export const LONG = 250;
/**
 * `history_250 = ln(min(returns, 250) / 250)` over 0.6: 0 with a year of history, −1.24 at 120 bars, −2.41 at 60,
 * −4.29 at 20 (the shortest history allowed), so it never clips.
 */
const HISTORY_SCALE = 0.6;

export const FEATURE_TABLE: readonly FeatureSpecRow[] = [
  // H = 16: the steadiest univariate separators, then how the series moves with the reference markets.
  f('log_vol_20', LOG_VOL_CENTER, LOG_VOL_SCALE),
  f('log_vol_250', LOG_VOL_CENTER, LOG_VOL_SCALE),
  f('rel_vol_250', REL_VOL_CENTER, LOG_VOL_SCALE),
  f('range_ratio_60', RANGE_RATIO_CENTER, 0.3),
  f('skew_250', 0, 0.7),
  f('tail_ratio_250', 0.3, 0.08),
  f('asym_equity_250', 0, 0.3),
  f('trend_250', 0, 1.5),
  f('history_250', 0, HISTORY_SCALE),
  f('ctx_coverage_250', 1, 0.5),
  f('corr_equity_250', 0, 0.5),
  f('corr_rates_250', 0, 0.5),
  f('corr_gold_250', 0, 0.5),
  f('corr_commodity_250', 0, 0.5),
  f('corr_dollar_250', 0, 0.5),
  f('beta_best_250', 0, 0.35),
  // H = 32 adds:
  f('volume_change_sd_60', 0.8, 0.35),
  f('log_kurt_250', 1.7, 0.4),
  f('leverage_corr_250', 0, 0.1),
  f('abs_autocorr_250', 0.15, 0.1),
  f('semi_ratio_250', 0, 0.08),
  f('big_gap_frac_250', 0.005, 0.006),
  f('volume_ret_corr_60', 0.25, 0.2),
  f('up_frac_250', 0.5, 0.04),
  f('autocorr1_250', 0, 0.08),
  f('max_ret_250', 1.6, 0.3),
  f('drawdown_60', 1, 0.7),
  f('beta_equity_250', 0, 0.35),
  f('beta_rates_250', 0, 0.35),
  f('beta_gold_250', 0, 0.35),
  f('beta_commodity_250', 0, 0.35),
  f('beta_dollar_250', 0, 0.35),
];

export const FEATURE_COUNT = FEATURE_TABLE.length;

const logVol = (s: number): number => Math.log(Math.max(s, VOL_FLOOR));

/** Sum of a prefix array over the `k` days ending at t. */
const win = (p: Float64Array, t: number, k: number): number => p[t + 1]! - p[t + 1 - k]!;

/**
 * Fewest returns (or pairs of returns) a shape statistic or an autocorrelation needs; below it the statistic reads
 * its "no information" value (skew 0, kurtosis 3, correlation 0). Windows shorter than the nominal one (short
 * histories) use what exists from this many days on.
 */
export const MIN_STAT_DAYS = 20;

/** Pearson correlation from window sums; 0 when either side has no variance. */
function corr(n: number, sx: number, sy: number, sxx: number, syy: number, sxy: number): number {
  const vx = sxx / n - (sx / n) ** 2;
  const vy = syy / n - (sy / n) ** 2;
  if (!(vx > 1e-20 && vy > 1e-20)) return 0;
  return Math.max(-1, Math.min(1, (sxy / n - (sx / n) * (sy / n)) / Math.sqrt(vx * vy)));
}

/** Skewness and ln kurtosis of the last `shape` call (module scratch: no object per token). */
let shapeSkew = 0;
let shapeLogKurt = 0;

/**
 * Skewness and ln kurtosis of the returns of the `k` days ending at t (central moments), into shapeSkew and
 * shapeLogKurt; none (0 and ln 3) under MIN_STAT_DAYS or without variance.
 */
function shape(s: RawWindowStats, t: number, k: number): void {
  shapeSkew = 0;
  shapeLogKurt = Math.log(3);
  if (k < MIN_STAT_DAYS) return;
  const m1 = win(s.pR, t, k) / k;
  const m2 = win(s.pR2, t, k) / k;
  const m3 = win(s.pR3, t, k) / k;
  const m4 = win(s.pR4, t, k) / k;
  const c2 = m2 - m1 * m1;
  if (!(c2 > 1e-14)) return;
  const m1s = m1 * m1;
  const c3 = m3 - 3 * m1 * m2 + 2 * m1s * m1;
  const c4 = m4 - 4 * m1 * m3 + 6 * m1s * m2 - 3 * m1s * m1s;
  shapeSkew = c3 / (c2 * Math.sqrt(c2));
  shapeLogKurt = Math.log(Math.max(c4 / (c2 * c2), 1));
}

const sigma = (s: RawWindowStats, t: number, k: number): number => Math.sqrt(win(s.pR2, t, k) / k);

/**
 * Fewest shared days in the window (up to 250 days) for a context correlation or beta to count; fewer reads as
 * "no context". v3 asked 60; v4 reads short histories. Over 20 days a correlation near 0 is known to about ±0.23
 * (1/√19), one near ±1 far better: enough to tell an index or leveraged fund from a bond or gold fund.
 */
export const MIN_CONTEXT_DAYS = 20;

/**
 * Correlation, sign(β)·ln(1 + |β|) (3x funds ≈ ±1.4, an index fund ≈ 0.7, an unrelated series ≈ 0) and shared days
 * of the instrument with each context over the current window, written by `contextFits` (no allocation per token).
 */
const fitCorr = new Float64Array(CONTEXT_SET.length);
const fitBeta = new Float64Array(CONTEXT_SET.length);
const fitDays = new Float64Array(CONTEXT_SET.length);

/** Correlation and regression slope of the instrument on each context over the `k` days ending at t. */
function contextFits(ctx: readonly (ContextWindowStats | null)[], t: number, k: number): void {
  for (let i = 0; i < fitCorr.length; i++) {
    const c = ctx[i] ?? null;
    fitCorr[i] = 0;
    fitBeta[i] = 0;
    fitDays[i] = 0;
    if (c === null) continue;
    const n = win(c.pN, t, k);
    fitDays[i] = n;
    if (n < MIN_CONTEXT_DAYS) continue;
    const sx = win(c.pX, t, k);
    const sy = win(c.pY, t, k);
    const syy = win(c.pYY, t, k);
    const sxy = win(c.pXY, t, k);
    const vy = syy / n - (sy / n) ** 2;
    const cov = sxy / n - (sx / n) * (sy / n);
    const beta = vy > 1e-14 ? cov / vy : 0;
    fitCorr[i] = corr(n, sx, sy, win(c.pXX, t, k), syy, sxy);
    fitBeta[i] = Math.sign(beta) * Math.log1p(Math.min(Math.abs(beta), 50));
  }
}

/** Daily volatility of the equity market the relative-volatility features assume when the equity context is missing. */
export const TYPICAL_MARKET_VOL = 0.011;

/**
 * ln(σ / σ_equity) over the shared days of the `k` days ending at t: how many times the equity market's volatility
 * the instrument moves, which stays put when a whole market turns calm or wild (2017 against 2008), where σ itself
 * moves with it. Without enough shared days, σ against TYPICAL_MARKET_VOL.
 */
function relativeVol(c: ContextWindowStats | null, t: number, k: number, ownSigma: number): number {
  const n = c ? win(c.pN, t, k) : 0;
  if (!c || n < MIN_CONTEXT_DAYS) return Math.log(Math.max(ownSigma, VOL_FLOOR) / TYPICAL_MARKET_VOL);
  const sx = win(c.pX, t, k);
  const sy = win(c.pY, t, k);
  const vx = win(c.pXX, t, k) / n - (sx / n) ** 2;
  const vy = win(c.pYY, t, k) / n - (sy / n) ** 2;
  return 0.5 * Math.log(Math.max(vx, VOL_FLOOR ** 2) / Math.max(vy, VOL_FLOOR ** 2));
}

/** Fewest down (and up) days of the context in a window for the asymmetry feature; fewer reads as none. */
export const MIN_SIDE_DAYS = 10;

/** Slope of y on x from window sums (regression with intercept); null with too few days or no variance of x. */
function sideFit(n: number, sx: number, sy: number, sxx: number, sxy: number): number | null {
  if (n < MIN_SIDE_DAYS) return null;
  const vx = sxx / n - (sx / n) ** 2;
  return vx > 1e-14 ? (sxy / n - (sx / n) * (sy / n)) / vx : null;
}

/**
 * Spot–volatility asymmetry against the equity context: (β on the context's down days − β on its up days) × σ_ctx / σ,
 * over the shared days of the window. Volatility products react about twice as hard to a falling market as to a
 * rising one (short-volatility funds ≈ +0.75, VIX futures funds ≈ −0.6 on the development data); stocks, index and
 * leveraged funds react alike (≈ 0). 0 without the equity context.
 */
function downsideAsymmetry(c: ContextWindowStats | null, t: number, k: number): number {
  const d = c?.down;
  if (!c || !d) return 0;
  const n = win(c.pN, t, k);
  if (n < MIN_CONTEXT_DAYS) return 0;
  const nd = win(d.pN, t, k);
  // Context as the regressor: y is the context's return, x the instrument's.
  const [sy, syy, sx, sxx, sxy] = [win(c.pY, t, k), win(c.pYY, t, k), win(c.pX, t, k), win(c.pXX, t, k), win(c.pXY, t, k)];
  const [dy, dyy, dx, dxy] = [win(d.pY, t, k), win(d.pYY, t, k), win(d.pX, t, k), win(d.pXY, t, k)];
  const bDown = sideFit(nd, dy, dx, dyy, dxy);
  const bUp = sideFit(n - nd, sy - dy, sx - dx, syy - dyy, sxy - dxy);
  if (bDown === null || bUp === null) return 0;
  const vy = syy / n - (sy / n) ** 2;
  const vx = sxx / n - (sx / n) ** 2;
  if (!(vy > 1e-14 && vx > 1e-14)) return 0;
  return (bDown - bUp) * Math.sqrt(vy / vx);
}

/**
 * Raw (un-normalised) values of the first `count` features for bar t (t ≥ 1), written into `out` in FEATURE_TABLE
 * order (a feature never depends on `count`). Each window of nominal length k covers the min(k, t) returns that exist
 * at bar t (returns start at bar 1); the lagged statistics min(k, t − 1) pairs.
 */
export function rawFeatureRow(s: RawWindowStats, t: number, out: Float64Array, count: number = FEATURE_COUNT): void {
  const w20 = Math.min(20, t);
  const w60 = Math.min(60, t);
  const wL = Math.min(LONG, t);
  // Pairs (r_{j−1}, r_j) with both returns real: j ≥ 2.
  const wLag = Math.min(LONG, t - 1);
  const s20 = sigma(s, t, w20);
  const s60 = sigma(s, t, w60);
  const sL = sigma(s, t, wL);
  shape(s, t, wL);
  const park60 = Math.sqrt(win(s.pHl2, t, w60) / w60 / (4 * Math.LN2));
  const m2L = win(s.pR2, t, wL) / wL;
  const meanAbsL = win(s.pAbs, t, wL) / wL;
  contextFits(s.ctx, t, wL);
  let best = -1;
  let coverage = 0;
  for (let i = 0; i < fitCorr.length; i++) {
    if (Math.abs(fitCorr[i]!) > (best < 0 ? 0 : Math.abs(fitCorr[best]!))) best = i;
    coverage += Math.min(1, fitDays[i]! / wL) / fitCorr.length;
  }

  out[0] = logVol(s20);
  out[1] = logVol(sL);
  out[2] = relativeVol(s.ctx[EQUITY_CONTEXT] ?? null, t, wL, sL);
  // Without a range on at least half of the window's bars (a close-only vendor), the ratio says nothing: its centre.
  out[3] = win(s.pRanged, t, w60) >= w60 / 2 ? Math.log(Math.max(park60, VOL_FLOOR) / Math.max(s60, VOL_FLOOR)) : RANGE_RATIO_CENTER;
  out[4] = shapeSkew;
  // ln(σ / mean|r|): ln √(π/2) ≈ 0.23 for a normal law, larger the fatter the tails; far steadier than kurtosis.
  out[5] = meanAbsL > 1e-12 ? Math.log(Math.sqrt(m2L) / meanAbsL) : 0.23;
  out[6] = downsideAsymmetry(s.ctx[EQUITY_CONTEXT] ?? null, t, wL);
  out[7] = win(s.pR, t, wL) / (Math.max(sL, VOL_FLOOR) * Math.sqrt(wL));
  // How much history the other features had: 0 with a full year, negative below (see HISTORY_SCALE).
  out[8] = Math.log(wL / LONG);
  out[9] = coverage;
  for (let k = 0; k < CONTEXT_SET.length; k++) out[10 + k] = fitCorr[k]!;
  out[15] = best < 0 ? 0 : fitBeta[best]!;
  if (count <= 16) return;

  const dN60 = win(s.pDlvN, t, w60);
  const dMean = dN60 > 0 ? win(s.pDlv, t, w60) / dN60 : 0;
  out[16] = dN60 > 1 ? Math.sqrt(Math.max(0, win(s.pDlv2, t, w60) / dN60 - dMean * dMean)) : 0.8;
  out[17] = shapeLogKurt;
  if (wLag >= MIN_STAT_DAYS) {
    out[18] = corr(wLag, win(s.pLag, t, wLag), win(s.pAbs, t, wLag), win(s.pLag2, t, wLag), win(s.pR2, t, wLag), win(s.pLagAbs, t, wLag));
    out[19] = corr(wLag, win(s.pAbs, t, wLag), win(s.pAbsLag, t, wLag), win(s.pR2, t, wLag), win(s.pLag2, t, wLag), win(s.pAbsAbsLag, t, wLag));
    // Lag-1 autocorrelation (not demeaned): stale pricing of munis, floating-rate and near-cash funds shows as > 0.
    const m2Lag = win(s.pR2, t, wLag) / wLag;
    out[24] = m2Lag > 1e-14 ? win(s.pRLag, t, wLag) / wLag / m2Lag : 0;
  } else {
    out[18] = 0;
    out[19] = 0;
    out[24] = 0;
  }
  const down = Math.sqrt(win(s.pDown2, t, wL) / wL);
  const up = Math.sqrt(win(s.pUp2, t, wL) / wL);
  out[20] = Math.log(Math.max(down, VOL_FLOOR) / Math.max(up, VOL_FLOOR));
  out[21] = win(s.pBigGap, t, wL) / wL;
  const vN60 = win(s.pVolN, t, w60);
  out[22] =
    vN60 >= MIN_STAT_DAYS
      ? corr(vN60, win(s.pAbsV, t, w60), win(s.pLv, t, w60), win(s.pAbs2V, t, w60), win(s.pLv2, t, w60), win(s.pAbsLv, t, w60))
      : 0.25;
  out[23] = win(s.pUp, t, wL) / wL;
  out[25] = Math.log(Math.max(s.maxAbsL[t]!, VOL_FLOOR) / Math.max(sL, VOL_FLOOR));
  out[26] = s.mdd60[t]! / (Math.max(s60, VOL_FLOOR) * Math.sqrt(w60));
  for (let k = 0; k < CONTEXT_SET.length; k++) out[27 + k] = fitBeta[k]!;
}
