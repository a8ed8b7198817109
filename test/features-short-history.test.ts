import { describe, expect, it } from 'vitest';
import { computeFeatures, FEATURE_SPEC, FEATURE_TABLE, MIN_HISTORY_BARS, WARMUP_DAYS, tokenCount } from '../src/data/features/compute.js';
import { EQUITY_CONTEXT, MIN_CONTEXT_DAYS, MIN_SIDE_DAYS, MIN_STAT_DAYS, TYPICAL_MARKET_VOL } from '../src/data/features/table.js';
import { NO_CONTEXT, contextSeries } from '../src/data/features/context.js';
import { simulateBars, simulateContext, simulateContextBars } from '../src/data/sim/simulator.js';
import { isoToDays } from '../src/data/dates.js';
import type { Bar } from '../src/data/types.js';

const N = 400;
const SEED = 41;
const ctxBars = simulateContextBars(SEED, N);
const context = simulateContext(SEED, N);
const spy = ctxBars.get('SPY')!;
const stock = simulateBars('SHORTX', { class: 'Equities', subtype: 'stock' }, N, SEED);
const col = (name: string): number => {
  const k = FEATURE_TABLE.findIndex((f) => f.name === name);
  expect(k, name).toBeGreaterThanOrEqual(0);
  return k;
};
const norm = (name: string, raw: number): number => {
  const f = FEATURE_TABLE[col(name)]!;
  return Math.max(-5, Math.min(5, (raw - f.center) / f.scale));
};

/** A daily-rebalanced fund on SPY (same dates as the context): simple return `lev ×` SPY's. */
function leveragedOn(base: Bar[], lev: number): Bar[] {
  let close = 50;
  return base.map((b, i) => {
    if (i > 0) close *= 1 + lev * (b.adjClose / base[i - 1]!.adjClose - 1);
    return { date: b.date, open: close, high: close * 1.01, low: close * 0.99, close, adjClose: close, volume: 1000 + ((i * 37) % 101) };
  });
}

const logRet = (bars: readonly Bar[], t: number): number => Math.log(bars[t]!.adjClose / bars[t - 1]!.adjClose);

describe('feature spec v6: short histories', () => {
  it('is spec v6 with rel_vol_250 at slot 2, history_250 at slot 8 and volume_change_sd_60 at slot 16', () => {
    expect(FEATURE_SPEC).toBe('v6');
    expect(FEATURE_TABLE[1]!.name).toBe('log_vol_250');
    expect(FEATURE_TABLE[2]!.name).toBe('rel_vol_250');
    expect(FEATURE_TABLE.some((f) => f.name === 'gap_share_250')).toBe(false);
    expect(FEATURE_TABLE).toHaveLength(32);
    expect(FEATURE_TABLE[8]!.name).toBe('history_250');
    expect(FEATURE_TABLE[16]!.name).toBe('volume_change_sd_60');
    expect(FEATURE_TABLE.some((f) => f.name === 'log_vol_60')).toBe(false);
    expect(new Set(FEATURE_TABLE.map((f) => f.name)).size).toBe(32);
    expect([MIN_HISTORY_BARS, WARMUP_DAYS, MIN_CONTEXT_DAYS, MIN_SIDE_DAYS, MIN_STAT_DAYS]).toEqual([60, 250, 20, 10, 20]);
  });

  it('gives one token per bar from bar minBars − 1 on, and only the last `days` when asked', () => {
    for (const minBars of [20, 60, 120, 251]) {
      const f = computeFeatures('S', stock, 16, NO_CONTEXT, { minBars });
      expect(f.dates).toHaveLength(N - minBars + 1);
      expect(tokenCount(N, { minBars })).toBe(N - minBars + 1);
      expect(f.dates[0]).toBe(isoToDays(stock[minBars - 1]!.date));
      expect(f.dates.at(-1)).toBe(isoToDays(stock[N - 1]!.date));
      expect(f.ret[0]).toBeCloseTo(logRet(stock, minBars - 1), 6);
    }
    // 251 bars minimum: the token count of spec v3 (n − 250).
    expect(computeFeatures('S', stock, 16, NO_CONTEXT, { minBars: 251 }).dates).toHaveLength(N - WARMUP_DAYS);
    // Exactly minBars bars give one token; one fewer none.
    expect(computeFeatures('S', stock.slice(0, 60), 16).dates).toHaveLength(1);
    expect(computeFeatures('S', stock.slice(0, 59), 16).dates).toHaveLength(0);

    const all = computeFeatures('S', stock, 32, context);
    for (const days of [1, 30, N - 59, 10_000]) {
      const tail = computeFeatures('S', stock, 32, context, { days });
      const k = Math.min(days, N - 59);
      expect(tail.dates).toHaveLength(k);
      expect(tokenCount(N, { days })).toBe(k);
      const off = all.dates.length - k;
      expect(Array.from(tail.dates)).toEqual(Array.from(all.dates.subarray(off)));
      expect(Array.from(tail.x)).toEqual(Array.from(all.x.subarray(off * 32)));
      expect(Array.from(tail.vol)).toEqual(Array.from(all.vol.subarray(off)));
      expect(Array.from(tail.risk)).toEqual(Array.from(all.risk.subarray(off)));
    }
  });

  it('makes the token of bar t from bars 0..t alone, at every history length', () => {
    const all = computeFeatures('S', stock, 32, context);
    for (const t of [59, 60, 100, 249, 250, 251, N - 1]) {
      const own = computeFeatures('S', stock.slice(0, t + 1), 32, context);
      const i = t - 59;
      expect(own.dates.at(-1)).toBe(all.dates[i]);
      expect(Array.from(own.x.subarray(own.x.length - 32))).toEqual(Array.from(all.x.subarray(i * 32, i * 32 + 32)));
      expect(own.vol.at(-1)).toBe(all.vol[i]);
      expect(own.risk.at(-1)).toBe(all.risk[i]);
    }
  });

  it('reads every window over the returns that exist (min(k, t)) and says how many in history_250', () => {
    const f = computeFeatures('S', stock, 32, NO_CONTEXT);
    const t = 59; // first token: 59 returns
    const r = Array.from({ length: t }, (_, j) => logRet(stock, j + 1));
    const sum = r.reduce((a, b) => a + b, 0);
    const m2 = r.reduce((a, b) => a + b * b, 0) / t;
    const sigma = Math.sqrt(m2);
    const meanAbs = r.reduce((a, b) => a + Math.abs(b), 0) / t;
    const x = (name: string): number => f.x[col(name)]!;
    expect(x('log_vol_250')).toBeCloseTo(norm('log_vol_250', Math.log(sigma)), 5);
    // Without the equity context, relative volatility reads σ against a typical market's 1.1 % a day.
    expect(x('rel_vol_250')).toBeCloseTo(norm('rel_vol_250', Math.log(sigma / TYPICAL_MARKET_VOL)), 5);
    expect(x('trend_250')).toBeCloseTo(norm('trend_250', sum / (sigma * Math.sqrt(t))), 5);
    expect(x('tail_ratio_250')).toBeCloseTo(norm('tail_ratio_250', Math.log(sigma / meanAbs)), 4);
    expect(x('up_frac_250')).toBeCloseTo(norm('up_frac_250', r.filter((v) => v > 0).length / t), 5);
    expect(x('history_250')).toBeCloseTo(Math.log(59 / 250) / 0.6, 5);
    const sigma20 = Math.sqrt(r.slice(-20).reduce((a, b) => a + b * b, 0) / 20);
    expect(f.vol[0]).toBeCloseTo(sigma20, 7);
    expect(x('log_vol_20')).toBeCloseTo(norm('log_vol_20', Math.log(sigma20)), 5);
    // Drawdown over the 60 closes that exist (bars 0..59).
    let peak = stock[0]!.adjClose;
    let dd = 0;
    for (let j = 1; j <= t; j++) {
      peak = Math.max(peak, stock[j]!.adjClose);
      dd = Math.max(dd, 1 - stock[j]!.adjClose / peak);
    }
    expect(f.risk[0]).toBeCloseTo(dd, 6);
    // history_250 grows with the history and reads 0 from a year on.
    const hist = Array.from({ length: f.dates.length }, (_, i) => f.x[i * 32 + col('history_250')]!);
    expect(hist[120 - 59]).toBeCloseTo(Math.log(120 / 250) / 0.6, 5);
    for (let i = 1; i < hist.length; i++) expect(hist[i]!).toBeGreaterThanOrEqual(hist[i - 1]!);
    expect(hist.slice(250 - 59).every((v) => v === 0)).toBe(true);
  });

  it('reads a full history exactly as far back as a year: the bars before do not matter', () => {
    const cut = 100;
    const all = computeFeatures('S', stock, 32, context);
    const late = computeFeatures('S', stock.slice(cut), 32, context);
    // Bars t ≥ cut + 251 have a full year (250 returns, 250 lag pairs) in both; their tokens agree (prefix sums
    // differ only in rounding).
    for (let t = cut + 251; t < N; t++) {
      const i = t - 59;
      const j = t - cut - 59;
      for (let k = 0; k < 32; k++) expect(Math.abs(late.x[j * 32 + k]! - all.x[i * 32 + k]!), `bar ${t} feature ${k}`).toBeLessThan(1e-4);
    }
    // Earlier tokens of the late series have less history and say so.
    expect(late.x[col('history_250')]).toBeLessThan(-2);
  });

  it('reads volatility against the equity market over the shared days: a 2x fund on it at ln 2 in any regime', () => {
    for (const scale of [1, 3]) {
      // The same fund in a market three times as wild: absolute volatility triples, relative volatility stays.
      let close = spy[0]!.adjClose;
      const market = spy.map((b, i) => {
        if (i > 0) close *= Math.exp(scale * Math.log(b.adjClose / spy[i - 1]!.adjClose));
        return { ...b, open: close, high: close, low: close, close, adjClose: close };
      });
      const ctx = context.map((c, i) => (i === EQUITY_CONTEXT ? contextSeries('SPY', market) : c));
      const f = computeFeatures('LEV', leveragedOn(market, 2), 16, ctx);
      const last = f.x.length / 16 - 1;
      expect(f.x[last * 16 + col('rel_vol_250')]!, `market scale ${scale}`).toBeCloseTo(norm('rel_vol_250', Math.log(2)), 1);
    }
  });

  it('counts context coverage against the history the instrument has', () => {
    const fund = leveragedOn(spy, 2);
    const full = computeFeatures('L2', fund, 32, context);
    const none = computeFeatures('L2', fund, 32, NO_CONTEXT);
    const k = col('ctx_coverage_250');
    for (const i of [0, 60, full.dates.length - 1]) {
      expect(full.x[i * 32 + k]).toBeCloseTo(0, 6); // every context shares every day: full coverage from 60 bars on
      expect(none.x[i * 32 + k]).toBeCloseTo(-2, 6);
    }
    // A 2x fund reads corr ≈ 1 and β ≈ 2 on SPY already from its first 59 returns.
    expect(full.x[col('corr_equity_250')]).toBeGreaterThan(1.95);
    expect(full.x[col('beta_equity_250')]).toBeCloseTo(Math.log1p(2) / 0.35, 1);
  });

  it('gives the "no information" values below the floors, and real values from them on', () => {
    const fund = leveragedOn(spy, 1);
    const f = computeFeatures('L1', fund, 32, context, { minBars: 20 });
    const at = (t: number, name: string): number => f.x[(t - 19) * 32 + col(name)]!;
    // Bar 19: 19 returns and 19 shared days, below every floor of 20.
    for (const name of ['corr_equity_250', 'beta_equity_250', 'beta_best_250', 'skew_250', 'leverage_corr_250', 'abs_autocorr_250', 'autocorr1_250', 'asym_equity_250']) {
      expect(at(19, name), name).toBeCloseTo(norm(name, 0), 6);
    }
    expect(at(19, 'log_kurt_250')).toBeCloseTo(norm('log_kurt_250', Math.log(3)), 5);
    expect(at(19, 'volume_ret_corr_60')).toBe(0); // the centre, 0.25, is 0 once normalised
    // Bar 20: 20 returns and shared days: correlation, beta and shape count.
    expect(at(20, 'corr_equity_250')).toBeCloseTo(2, 3);
    expect(at(20, 'beta_equity_250')).toBeCloseTo(Math.log1p(1) / 0.35, 2);
    expect(at(20, 'skew_250')).not.toBe(0);
    // Lag statistics need 20 pairs (r_{j−1}, r_j), j ≥ 2: bar 21.
    expect(at(20, 'abs_autocorr_250')).toBeCloseTo(norm('abs_autocorr_250', 0), 6);
    expect(at(21, 'abs_autocorr_250')).not.toBeCloseTo(norm('abs_autocorr_250', 0), 6);
    // The asymmetry needs 20 shared days with ≥ 10 down and ≥ 10 up days of SPY: it starts exactly there.
    let down = 0;
    let up = 0;
    let expectedFirst = -1;
    for (let t = 1; t < N && expectedFirst < 0; t++) {
      const y = logRet(spy, t);
      if (y < 0) down += 1;
      else up += 1;
      if (t >= 19 && down >= MIN_SIDE_DAYS && up >= MIN_SIDE_DAYS && t >= MIN_CONTEXT_DAYS) expectedFirst = t;
    }
    expect(expectedFirst).toBeGreaterThan(19);
    for (let t = 19; t < expectedFirst; t++) expect(at(t, 'asym_equity_250')).toBeCloseTo(0, 9);
    // A leveraged index fund reacts alike to falls and rises (≈ 0), but the fit is made.
    expect(Math.abs(at(expectedFirst, 'asym_equity_250'))).toBeGreaterThan(0);
    expect(Math.abs(at(expectedFirst, 'asym_equity_250'))).toBeLessThan(1);
  });

  it('reads no range ratio from a vendor that gives closes only: the centre, whatever the rest of the series', () => {
    const closesOnly = (bars: readonly Bar[]): Bar[] => bars.map((b) => ({ ...b, open: b.close, high: b.close, low: b.close }));
    const k = col('range_ratio_60');
    const ranged = computeFeatures('S', stock, 16, context);
    const bare = computeFeatures('S', closesOnly(stock), 16, context);
    const n = ranged.dates.length;
    for (let d = 0; d < n; d++) {
      expect(bare.x[d * 16 + k]).toBe(0);
      expect(ranged.x[d * 16 + k]).not.toBe(0);
      // Every other feature of the token reads only closes (and the same context): unchanged.
      for (let j = 0; j < 16; j++) if (j !== k) expect(bare.x[d * 16 + j]).toBe(ranged.x[d * 16 + j]);
    }
    // A range on fewer than half of the window's 60 bars is no range either; on half of them it is read.
    const withRangeOn = (every: number): Bar[] => stock.map((b, i) => (i % every === 0 ? b : { ...b, open: b.close, high: b.close, low: b.close }));
    const last = (bars: Bar[]): number => computeFeatures('S', bars, 16, context).x[(n - 1) * 16 + k]!;
    expect(last(withRangeOn(3))).toBe(0);
    expect(last(withRangeOn(2))).not.toBe(0);
  });

  it('refuses a minimum below 20 bars or a days count below 1', () => {
    expect(() => computeFeatures('X', stock, 16, NO_CONTEXT, { minBars: 19 })).toThrow(/^Expected integer ≥ 20 for minBars of X but received 19$/);
    expect(() => computeFeatures('X', stock, 16, NO_CONTEXT, { minBars: 60.5 })).toThrow(RangeError);
    expect(() => computeFeatures('X', stock, 16, NO_CONTEXT, { days: 0 })).toThrow(/^Expected integer ≥ 1 for days of X but received 0$/);
  });

  it('stays finite and within the clip on short, gappy and flat histories', () => {
    const gappy = simulateBars('GAPPY', { class: 'Commodities', subtype: 'agriculture' }, 140, 4).filter((_, i) => i % 3 !== 1 || i < 5);
    const flat = stock.slice(0, 80).map((b) => ({ ...b, open: 50, high: 50, low: 50, close: 50, adjClose: 50 }));
    const noVolume = stock.slice(0, 80).map((b, i) => ({ ...b, volume: i % 2 ? null : 0 }));
    for (const series of [gappy, flat, noVolume]) {
      const f = computeFeatures('G', series, 32, context, { minBars: 20 });
      expect(f.dates.length).toBe(series.length - 19);
      for (const arr of [f.x, f.vol, f.risk, f.ret]) expect(arr.every(Number.isFinite)).toBe(true);
      for (const v of f.x) expect(Math.abs(v)).toBeLessThanOrEqual(5);
    }
  });
});
