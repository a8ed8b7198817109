import { CONTEXT_SET } from './context.js';

/**
 * The feature table: raw statistics per day and the fixed constants that normalise them. Constants were set once
 * from the simulator and the development data (see docs/features.md) and are part of FEATURE_SPEC: changing one
 * means a new spec and retraining. Never replace them with per-window z-scores: the absolute levels are the signal.
 */

/** Per-bar series and prefix sums (`p*[t+1] = Σ_{j≤t}`) prepared by features.ts. */
export interface RawWindowStats {
  n: number;
  r: Float64Array;
  /** ln volume relative to the first known volume; NaN where unknown. */
  logVol: Float64Array;
  mdd60: Float64Array;
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
  /** ln(high/low)², overnight gap². */
  pHl2: Float64Array;
  pGap2: Float64Array;
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
/** Floor of any volatility before a log: 0.1 bp a day, below a one-cent tick on a $1,000 price. */
export const VOL_FLOOR = 1e-5;
/** Longest window, in returns. */
export const LONG = 250;

export const FEATURE_TABLE: readonly FeatureSpecRow[] = [
  // H = 16: the steadiest univariate separators, then how the series moves with the reference markets.
  f('log_vol_20', LOG_VOL_CENTER, LOG_VOL_SCALE),
  f('log_vol_250', LOG_VOL_CENTER, LOG_VOL_SCALE),
  f('gap_share_250', -1, 0.5),
  f('range_ratio_60', -0.4, 0.3),
  f('skew_250', 0, 0.7),
  f('tail_ratio_250', 0.3, 0.08),
  f('asym_equity_250', 0, 0.3),
  f('trend_250', 0, 1.5),
  f('volume_change_sd_60', 0.8, 0.35),
  f('ctx_coverage_250', 1, 0.5),
  f('corr_equity_250', 0, 0.5),
  f('corr_rates_250', 0, 0.5),
  f('corr_gold_250', 0, 0.5),
  f('corr_commodity_250', 0, 0.5),
  f('corr_dollar_250', 0, 0.5),
  f('beta_best_250', 0, 0.35),
  // H = 32 adds:
  f('log_vol_60', LOG_VOL_CENTER, LOG_VOL_SCALE),
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

/** Pearson correlation from window sums; 0 when either side has no variance. */
function corr(n: number, sx: number, sy: number, sxx: number, syy: number, sxy: number): number {
  const vx = sxx / n - (sx / n) ** 2;
  const vy = syy / n - (sy / n) ** 2;
  if (!(vx > 1e-20 && vy > 1e-20)) return 0;
  return Math.max(-1, Math.min(1, (sxy / n - (sx / n) * (sy / n)) / Math.sqrt(vx * vy)));
}

/** Skewness and ln kurtosis of the returns of the `k` days ending at t (central moments). */
function shape(s: RawWindowStats, t: number, k: number): { skew: number; logKurt: number } {
  const m1 = win(s.pR, t, k) / k;
  const m2 = win(s.pR2, t, k) / k;
  const m3 = win(s.pR3, t, k) / k;
  const m4 = win(s.pR4, t, k) / k;
  const c2 = m2 - m1 * m1;
  if (!(c2 > 1e-14)) return { skew: 0, logKurt: Math.log(3) };
  const c3 = m3 - 3 * m1 * m2 + 2 * m1 ** 3;
  const c4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1 ** 4;
  return { skew: c3 / c2 ** 1.5, logKurt: Math.log(Math.max(c4 / (c2 * c2), 1)) };
}

const sigma = (s: RawWindowStats, t: number, k: number): number => Math.sqrt(win(s.pR2, t, k) / k);

/** ln(mean overnight gap² / mean return²): the share of a day's variance that happens while the venue is shut. */
function gapShare(s: RawWindowStats, t: number, k: number): number {
  const r2 = win(s.pR2, t, k);
  return r2 > 1e-14 ? Math.log(Math.max(win(s.pGap2, t, k) / r2, 1e-3)) : -1;
}

/** Fewest shared days in a 250-day window for a context correlation to count; fewer reads as "no context". */
export const MIN_CONTEXT_DAYS = 60;

interface ContextFit {
  corr: number;
  /** sign(β)·ln(1 + |β|): 3x funds ≈ ±1.4, an index fund ≈ 0.7, an unrelated series ≈ 0. */
  logBeta: number;
  /** Shared days in the window. */
  days: number;
}

const NO_FIT: ContextFit = { corr: 0, logBeta: 0, days: 0 };

/** Correlation and regression slope of the instrument on one context over the `k` days ending at t. */
function contextFit(c: ContextWindowStats | null, t: number, k: number): ContextFit {
  if (c === null) return NO_FIT;
  const n = win(c.pN, t, k);
  if (n < MIN_CONTEXT_DAYS) return { ...NO_FIT, days: n };
  const sx = win(c.pX, t, k);
  const sy = win(c.pY, t, k);
  const vy = win(c.pYY, t, k) / n - (sy / n) ** 2;
  const cov = win(c.pXY, t, k) / n - (sx / n) * (sy / n);
  const beta = vy > 1e-14 ? cov / vy : 0;
  return {
    corr: corr(n, sx, sy, win(c.pXX, t, k), win(c.pYY, t, k), win(c.pXY, t, k)),
    logBeta: Math.sign(beta) * Math.log1p(Math.min(Math.abs(beta), 50)),
    days: n,
  };
}

/** Fewest down (and up) days of the context in a window for the asymmetry feature; fewer reads as none. */
const MIN_SIDE_DAYS = 20;

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

/** Raw (un-normalised) values of every feature for bar t (t ≥ LONG), written into `out` in FEATURE_TABLE order. */
export function rawFeatureRow(s: RawWindowStats, t: number, out: Float64Array): void {
  const s20 = sigma(s, t, 20);
  const s60 = sigma(s, t, 60);
  const sL = sigma(s, t, LONG);
  const shapeL = shape(s, t, LONG);
  const park60 = Math.sqrt(win(s.pHl2, t, 60) / 60 / (4 * Math.LN2));
  const m2L = win(s.pR2, t, LONG) / LONG;
  const vN60 = win(s.pVolN, t, 60);
  const dN60 = win(s.pDlvN, t, 60);
  const dMean = dN60 > 0 ? win(s.pDlv, t, 60) / dN60 : 0;
  const down = Math.sqrt(win(s.pDown2, t, LONG) / LONG);
  const up = Math.sqrt(win(s.pUp2, t, LONG) / LONG);
  const meanAbsL = win(s.pAbs, t, LONG) / LONG;
  let maxAbs = 0;
  for (let j = t - LONG + 1; j <= t; j++) maxAbs = Math.max(maxAbs, Math.abs(s.r[j]!));
  const fits = s.ctx.map((c) => contextFit(c, t, LONG));
  let best = NO_FIT;
  let coverage = 0;
  for (const fit of fits) {
    if (Math.abs(fit.corr) > Math.abs(best.corr)) best = fit;
    coverage += Math.min(1, fit.days / LONG) / fits.length;
  }

  out[0] = logVol(s20);
  out[1] = logVol(sL);
  out[2] = gapShare(s, t, LONG);
  out[3] = Math.log(Math.max(park60, VOL_FLOOR) / Math.max(s60, VOL_FLOOR));
  out[4] = shapeL.skew;
  // ln(σ / mean|r|): ln √(π/2) ≈ 0.23 for a normal law, larger the fatter the tails; far steadier than kurtosis.
  out[5] = meanAbsL > 1e-12 ? Math.log(Math.sqrt(m2L) / meanAbsL) : 0.23;
  out[6] = downsideAsymmetry(s.ctx[EQUITY_CONTEXT] ?? null, t, LONG);
  out[7] = win(s.pR, t, LONG) / (Math.max(sL, VOL_FLOOR) * Math.sqrt(LONG));
  out[8] = dN60 > 1 ? Math.sqrt(Math.max(0, win(s.pDlv2, t, 60) / dN60 - dMean * dMean)) : 0.8;
  out[9] = coverage;
  for (let k = 0; k < CONTEXT_SET.length; k++) out[10 + k] = fits[k]?.corr ?? 0;
  out[15] = best.logBeta;

  out[16] = logVol(s60);
  out[17] = shapeL.logKurt;
  out[18] = corr(LONG, win(s.pLag, t, LONG), win(s.pAbs, t, LONG), win(s.pLag2, t, LONG), win(s.pR2, t, LONG), win(s.pLagAbs, t, LONG));
  out[19] = corr(LONG, win(s.pAbs, t, LONG), win(s.pAbsLag, t, LONG), win(s.pR2, t, LONG), win(s.pLag2, t, LONG), win(s.pAbsAbsLag, t, LONG));
  out[20] = Math.log(Math.max(down, VOL_FLOOR) / Math.max(up, VOL_FLOOR));
  out[21] = win(s.pBigGap, t, LONG) / LONG;
  out[22] =
    vN60 > 2
      ? corr(vN60, win(s.pAbsV, t, 60), win(s.pLv, t, 60), win(s.pAbs2V, t, 60), win(s.pLv2, t, 60), win(s.pAbsLv, t, 60))
      : 0.25;
  out[23] = win(s.pUp, t, LONG) / LONG;
  // Lag-1 autocorrelation (not demeaned): stale pricing of munis, floating-rate and near-cash funds shows as > 0.
  out[24] = m2L > 1e-14 ? win(s.pRLag, t, LONG) / LONG / m2L : 0;
  out[25] = Math.log(Math.max(maxAbs, VOL_FLOOR) / Math.max(sL, VOL_FLOOR));
  out[26] = s.mdd60[t]! / (Math.max(s60, VOL_FLOOR) * Math.sqrt(60));
  for (let k = 0; k < CONTEXT_SET.length; k++) out[27 + k] = fits[k]?.logBeta ?? 0;
}
