import { existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONTEXT_SET, NO_CONTEXT, alignContext, contextSeries, type MarketContext } from '../src/data/features/context.js';
import { fetchContext } from '../src/data/sources/context-fetch.js';
import { computeFeatures, FEATURE_TABLE, WARMUP_DAYS } from '../src/data/features/compute.js';
import { simulateBars, simulateContext, simulateContextBars } from '../src/data/sim/simulator.js';
import { createSource } from '../src/data/sources/create.js';
import { isoToDays } from '../src/data/dates.js';
import type { Bar } from '../src/data/types.js';

const DAYS = WARMUP_DAYS + 200;
const SEED = 31;
const ctxBars = simulateContextBars(SEED, DAYS);
const context = simulateContext(SEED, DAYS);
const spy = ctxBars.get('SPY')!;
const col = (name: string): number => FEATURE_TABLE.findIndex((f) => f.name === name);

/** Bars as a `<TICKER>.csv` of the csv source. */
const csv = (bars: readonly Bar[]): string =>
  ['date,open,high,low,close,adj_close,volume', ...bars.map((b) => `${b.date},${b.open},${b.high},${b.low},${b.close},${b.adjClose},${b.volume ?? ''}`)].join('\n') + '\n';

/** A daily-rebalanced fund on SPY: simple return `lev ×` SPY's, as leveraged and inverse ETFs promise. */
function leveragedOn(base: Bar[], lev: number): Bar[] {
  let close = 50;
  return base.map((b, i) => {
    if (i > 0) close *= 1 + lev * (b.adjClose / base[i - 1]!.adjClose - 1);
    return { date: b.date, open: close, high: close * 1.01, low: close * 0.99, close, adjClose: close, volume: 1000 + i };
  });
}

/** Mean of one normalised feature over a series' tokens. */
function meanOf(x: Float32Array, hidden: number, k: number): number {
  const n = x.length / hidden;
  let s = 0;
  for (let i = 0; i < n; i++) s += x[i * hidden + k]!;
  return s / n;
}

describe('market context features', () => {
  it('reads leverage and direction off the equity context: 3x ≈ ln 4, inverse ≈ −ln 2, correlation ±1', () => {
    const scale = FEATURE_TABLE[col('beta_equity_250')]!.scale;
    const three = computeFeatures('X3', leveragedOn(spy, 3), 32, context);
    const inv = computeFeatures('XI', leveragedOn(spy, -1), 32, context);
    expect(meanOf(three.x, 32, col('corr_equity_250')) * 0.5).toBeGreaterThan(0.99);
    expect(meanOf(three.x, 32, col('beta_equity_250')) * scale).toBeCloseTo(Math.log(4), 1);
    expect(meanOf(three.x, 32, col('beta_best_250')) * scale).toBeCloseTo(Math.log(4), 1);
    expect(meanOf(inv.x, 32, col('corr_equity_250')) * 0.5).toBeLessThan(-0.99);
    expect(meanOf(inv.x, 32, col('beta_equity_250')) * scale).toBeCloseTo(-Math.log(2), 1);
    // Full context over the whole window: coverage at its center.
    expect(meanOf(three.x, 32, col('ctx_coverage_250'))).toBeCloseTo(0, 5);
  });

  it('tells volatility funds by their down-day/up-day asymmetry against the equity context, and leveraged funds not', () => {
    const k = col('asym_equity_250');
    const scale = FEATURE_TABLE[k]!.scale;
    const asym = (bars: Bar[]): number => meanOf(computeFeatures('A', bars, 16, context).x, 16, k) * scale;
    const short = asym(simulateBars('SIM-DE-VXS-000', { class: 'Derivatives', subtype: 'volatility-short' }, DAYS, SEED));
    const long = asym(simulateBars('SIM-DE-VXL-000', { class: 'Derivatives', subtype: 'volatility-long' }, DAYS, SEED));
    // Short-volatility funds fall harder on the market's down days than they rise on its up days; VIX funds the other way.
    expect(short).toBeGreaterThan(0.3);
    expect(long).toBeLessThan(-0.3);
    // A fund that is an exact multiple of the index answers both alike, but for the small concavity of log returns
    // of a daily-rebalanced fund (real SPXL and UPRO read +0.05).
    expect(Math.abs(asym(leveragedOn(spy, 3)))).toBeLessThan(0.1);
    expect(Math.abs(asym(leveragedOn(spy, -2)))).toBeLessThan(0.1);
  });

  it('gives the documented "no context" values when the context is missing, and partial coverage when it starts late', () => {
    const bars = simulateBars('SIM-EQ-STK-001', { class: 'Equities', subtype: 'stock' }, DAYS, SEED);
    const none = computeFeatures('S', bars, 32, NO_CONTEXT);
    const ctxCols = FEATURE_TABLE.map((f, k) => (/^(corr|beta|asym)_/.test(f.name) ? k : -1)).filter((k) => k >= 0);
    expect(ctxCols).toHaveLength(12);
    for (let i = 0; i < none.vol.length; i++) {
      expect(none.x[i * 32 + col('ctx_coverage_250')]).toBeCloseTo(-2, 6);
      for (const k of ctxCols) expect(none.x[i * 32 + k]).toBe(0);
    }
    // The univariate features do not depend on the context at all.
    const full = computeFeatures('S', bars, 32, context);
    const univariate = [0, 1, 3, 4, 5, 7, 8];
    expect(univariate.some((k) => ctxCols.includes(k))).toBe(false);
    for (let i = 0; i < full.vol.length; i++) {
      for (const k of univariate) expect(full.x[i * 32 + k]).toBe(none.x[i * 32 + k]);
    }
    // Relative volatility reads against SPY when it is there, against a typical market's 1.1 % a day when not.
    const rel = col('rel_vol_250');
    expect(rel).toBe(2);
    const last = full.vol.length - 1;
    expect(full.x[last * 32 + rel]).not.toBe(none.x[last * 32 + rel]);
    expect(none.x[last * 32 + rel]! * 1.2 - 0.6).toBeCloseTo(none.x[last * 32 + 1]! * 1.2 - 5.1 - Math.log(0.011), 4);
    // Context that starts 100 days into the routed period: the first tokens see too few shared days.
    const late: MarketContext = context.map((c) => {
      const from = WARMUP_DAYS + 100;
      return c && { ticker: c.ticker, dates: c.dates.subarray(from), logClose: c.logClose.subarray(from) };
    });
    const part = computeFeatures('S', bars, 32, late);
    const cov = (i: number): number => part.x[i * 32 + col('ctx_coverage_250')]! * 0.5 + 1;
    expect(cov(0)).toBe(0);
    expect(cov(part.vol.length - 1)).toBeCloseTo(99 / 250, 5);
    expect(part.x[0 * 32 + col('corr_equity_250')]).toBe(0);
  });

  it('is causal and scale-invariant in the context too', () => {
    const bars = leveragedOn(spy, 2);
    const cut = WARMUP_DAYS + 80;
    const changed: MarketContext = context.map((c) => {
      if (c === null) return null;
      const logClose = c.logClose.map((v, i) => (i > cut ? v + 0.3 * Math.sin(i) : v + Math.log(10)));
      return { ...c, logClose };
    });
    const a = computeFeatures('L2', bars, 32, context);
    const b = computeFeatures('L2', bars, 32, changed);
    const upto = (cut - WARMUP_DAYS + 1) * 32;
    for (let k = 0; k < upto; k++) expect(Math.abs(a.x[k]! - b.x[k]!)).toBeLessThan(1e-5);
    let later = 0;
    for (let k = upto; k < a.x.length; k++) later = Math.max(later, Math.abs(a.x[k]! - b.x[k]!));
    expect(later).toBeGreaterThan(0.1);
  });

  it('aligns context returns to the instrument’s own intervals, skipping dates the context lacks', () => {
    const c = contextSeries('SPY', [
      { date: '2024-01-02', open: 1, high: 1, low: 1, close: 100, adjClose: 100, volume: 1 },
      { date: '2024-01-03', open: 1, high: 1, low: 1, close: 110, adjClose: 110, volume: 1 },
      { date: '2024-01-04', open: 1, high: 1, low: 1, close: 121, adjClose: 121, volume: 1 },
      { date: '2024-01-08', open: 1, high: 1, low: 1, close: 100, adjClose: 100, volume: 1 },
    ]);
    const dates = Int32Array.from(['2024-01-02', '2024-01-04', '2024-01-05', '2024-01-08'].map(isoToDays));
    const y = alignContext(c, dates);
    expect(Number.isNaN(y[0]!)).toBe(true);
    expect(y[1]).toBeCloseTo(Math.log(121 / 100), 12); // two days of the context for one step of the instrument
    expect(Number.isNaN(y[2]!)).toBe(true); // the context has no 2024-01-05
    expect(Number.isNaN(y[3]!)).toBe(true);
  });

  it('rejects a context of the wrong size with a clear message', () => {
    expect(() => computeFeatures('A', spy, 16, [null])).toThrow(/Expected a context of 5 series \(or null\) for A but received 1/);
  });

  it('the sim source serves the simulator’s reference markets for the context tickers', async () => {
    const src = createSource({ source: 'sim', seed: SEED });
    const got = await fetchContext([{ label: 'sim', source: src }], { days: 100 });
    expect(got.missing).toEqual([]);
    expect(Object.keys(got.from).sort()).toEqual(CONTEXT_SET.map((c) => c.ticker).sort());
    const direct = simulateContextBars(SEED, WARMUP_DAYS + 100);
    for (const c of got.context) expect(Array.from(c!.logClose)).toEqual(direct.get(c!.ticker)!.map((b) => Math.log(b.adjClose)));
  });

  const market = path.resolve(__dirname, '../../shared/market-data');
  it.skipIf(!existsSync(market))('finds the context in a csv folder, falls back to stand-ins, and reports what a folder lacks', async () => {
    const src = createSource({ source: 'csv', dataDir: market });
    const got = await fetchContext([{ label: market, source: src }], { days: 300 });
    expect(got.missing).toEqual([]);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'moe-ctx-'));
    try {
      const none = await fetchContext([{ label: dir, source: createSource({ source: 'csv', dataDir: dir }) }], { days: 300 });
      expect(none.context.every((c) => c === null)).toBe(true);
      expect(none.missing.map((m) => m.ticker).sort()).toEqual(CONTEXT_SET.map((c) => c.ticker).sort());
      expect(none.missing[0]!.reason).toMatch(/SPY|IEF|GLD|DBC|UUP/);
      // A stand-in (VOO for SPY) serves where the primary is absent; the primary in a later source still wins.
      symlinkSync(path.join(market, 'VOO.csv'), path.join(dir, 'VOO.csv'));
      symlinkSync(path.join(market, 'IEF.csv'), path.join(dir, 'IEF.csv'));
      const own = createSource({ source: 'csv', dataDir: dir });
      const some = await fetchContext([{ label: 'own', source: own }], { days: 300 });
      expect(some.from).toEqual({ SPY: 'own (VOO)', IEF: 'own' });
      expect(some.missing.map((m) => m.ticker).sort()).toEqual(['DBC', 'GLD', 'UUP']);
      const both = await fetchContext([{ label: 'own', source: own }, { label: 'dev', source: src }], { days: 300 });
      expect(both.from).toEqual({ SPY: 'dev', IEF: 'own', GLD: 'dev', DBC: 'dev', UUP: 'dev' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!existsSync(market))('stands the euro trust in for the dollar, inverted, where no dollar fund is to be had', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'moe-ctx-fx-'));
    try {
      symlinkSync(path.join(market, 'FXE.csv'), path.join(dir, 'FXE.csv'));
      const own = createSource({ source: 'csv', dataDir: dir });
      const got = await fetchContext([{ label: 'own', source: own }], { days: 300 });
      expect(got.from).toEqual({ UUP: 'own (1/FXE)' });
      const fxe = (await own.fetch('FXE', { days: 300 })).bars;
      const dollar = got.context[CONTEXT_SET.findIndex((c) => c.ticker === 'UUP')]!;
      // Every log close is FXE's negated: the euro's rises are the dollar's falls.
      expect(dollar.logClose.length).toBe(fxe.length);
      fxe.forEach((b, i) => expect(dollar.logClose[i]).toBeCloseTo(-Math.log(b.adjClose), 12));
      // A real dollar fund in any source still wins over the stand-in.
      const both = await fetchContext([{ label: 'own', source: own }, { label: 'dev', source: createSource({ source: 'csv', dataDir: market }) }], { days: 300 });
      expect(both.from.UUP).toBe('dev');
      // The short dollar-index fund, the same index held short, comes before the euro.
      writeFileSync(path.join(dir, 'UDN.csv'), csv(simulateBars('UDN', { class: 'Derivatives', subtype: 'fx-trust' }, 400, 5, '2024-12-31')));
      expect((await fetchContext([{ label: 'own', source: own }], { days: 300 })).from).toEqual({ UUP: 'own (1/UDN)' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!existsSync(market))('stands an aggregate or long Treasury fund in for IEF (and QQQ, USO for SPY, DBC), its moves scaled to the member’s size, in order of closeness', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'moe-ctx-rates-'));
    try {
      symlinkSync(path.join(market, 'TLT.csv'), path.join(dir, 'TLT.csv'));
      const own = createSource({ source: 'csv', dataDir: dir });
      const rates = CONTEXT_SET.findIndex((c) => c.ticker === 'IEF');
      const tltOnly = await fetchContext([{ label: 'own', source: own }], { days: 300 });
      expect(tltOnly.from).toEqual({ IEF: 'own (0.5×TLT)' });
      // Every log close moves half as far from the first as TLT's: a β against it reads as one against IEF.
      const tlt = (await own.fetch('TLT', { days: 300 })).bars;
      const l0 = Math.log(tlt[0]!.adjClose);
      tlt.forEach((b, i) => expect(tltOnly.context[rates]!.logClose[i]).toBeCloseTo(l0 + 0.5 * (Math.log(b.adjClose) - l0), 12));
      // AGG tracks IEF more closely than TLT does, so it serves first; a plain alternate (IEI) before either.
      symlinkSync(path.join(market, 'AGG.csv'), path.join(dir, 'AGG.csv'));
      expect((await fetchContext([{ label: 'own', source: own }], { days: 300 })).from).toEqual({ IEF: 'own (1.3×AGG)' });
      symlinkSync(path.join(market, 'IEI.csv'), path.join(dir, 'IEI.csv'));
      expect((await fetchContext([{ label: 'own', source: own }], { days: 300 })).from).toEqual({ IEF: 'own (IEI)' });
      // The equity and commodity members have theirs too: the Nasdaq-100 fund and a crude-oil fund.
      for (const t of ['QQQ', 'USO']) symlinkSync(path.join(market, `${t}.csv`), path.join(dir, `${t}.csv`));
      expect((await fetchContext([{ label: 'own', source: own }], { days: 300 })).from).toEqual({ SPY: 'own (0.8×QQQ)', IEF: 'own (IEI)', DBC: 'own (0.6×USO)' });
      // IEF itself in any source wins over every stand-in.
      const both = await fetchContext([{ label: 'own', source: own }, { label: 'dev', source: createSource({ source: 'csv', dataDir: market }) }], { days: 300 });
      expect(both.from.IEF).toBe('dev');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!existsSync(market))('scales each stand-in by 1 / its β to the member on the development data, and each tracks the member closely', async () => {
    const src = createSource({ source: 'csv', dataDir: market });
    const returns = async (t: string) => {
      const bars = (await src.fetch(t, { days: 2000 })).bars;
      return new Map(bars.slice(1).map((b, i) => [b.date, Math.log(b.adjClose / bars[i]!.adjClose)] as const));
    };
    let checked = 0;
    for (const member of CONTEXT_SET) {
      if (!('scaledAlternates' in member)) continue;
      const m = await returns(member.ticker);
      for (const { ticker, scale } of member.scaledAlternates) {
        if (!existsSync(path.join(market, `${ticker}.csv`))) continue;
        const a = await returns(ticker);
        const pairs = [...a].filter(([d]) => m.has(d)).map(([d, r]) => [m.get(d)!, r] as const);
        const mean = (k: 0 | 1) => pairs.reduce((s, p) => s + p[k], 0) / pairs.length;
        const [mx, my] = [mean(0), mean(1)];
        let cxy = 0, cxx = 0, cyy = 0;
        for (const [x, y] of pairs) [cxy, cxx, cyy] = [cxy + (x - mx) * (y - my), cxx + (x - mx) ** 2, cyy + (y - my) ** 2];
        // Scaled, the stand-in's β to the member is 1 within 5 %, and it moves with the member at ≥ 0.9.
        expect(Math.abs(scale * (cxy / cxx) - 1), `${scale}×${ticker} for ${member.ticker}`).toBeLessThan(0.05);
        expect(cxy / Math.sqrt(cxx * cyy), `${ticker} against ${member.ticker}`).toBeGreaterThan(0.9);
        checked += 1;
      }
    }
    // BIV, AGG, BND, SCHZ, VGLT, SPTL, TLH, TLT, QQQ, USO, DBO are all in the development folder.
    expect(checked).toBe(11);
  });

  it('serves each member from the candidate that covers the routed dates: a folder of 2001–2002 keeps its own stand-in', async () => {
    const old = mkdtempSync(path.join(os.tmpdir(), 'moe-ctx-old-'));
    const recent = mkdtempSync(path.join(os.tmpdir(), 'moe-ctx-new-'));
    try {
      // The data folder: 2001–2002, with IVV but no SPY (GLD, DBC and UUP are in neither folder).
      writeFileSync(path.join(old, 'IVV.csv'), csv(simulateBars('IVV', { class: 'Equities', subtype: 'index-etf' }, 500, 3, '2002-12-31')));
      writeFileSync(path.join(old, 'IEF.csv'), csv(simulateBars('IEF', { class: 'Fixed Income', subtype: 'treasury-long' }, 500, 4, '2002-12-31')));
      // The context folder: SPY and IEF of 2023–2024, sharing none of those days.
      writeFileSync(path.join(recent, 'SPY.csv'), csv(simulateBars('SPY', { class: 'Equities', subtype: 'index-etf' }, 500, 5, '2024-12-31')));
      writeFileSync(path.join(recent, 'IEF.csv'), csv(simulateBars('IEF', { class: 'Fixed Income', subtype: 'treasury-long' }, 500, 6, '2024-12-31')));
      const sources = [
        { label: 'old', source: createSource({ source: 'csv', dataDir: old }) },
        { label: 'recent', source: createSource({ source: 'csv', dataDir: recent }) },
      ];
      // Without the dates to route, the primary wins wherever it is (the order of earlier releases).
      expect((await fetchContext(sources, { days: 400 })).from).toEqual({ SPY: 'recent', IEF: 'old' });
      // For 2001–2002 tickers, SPY of 2023–2024 would share no day: the folder's own IVV serves.
      const span = { from: '2001-01-02', to: '2002-12-31' };
      const got = await fetchContext(sources, { days: 400 }, span);
      expect(got.from).toEqual({ SPY: 'old (IVV)', IEF: 'old' });
      expect(got.missing.map((m) => m.ticker).sort()).toEqual(['DBC', 'GLD', 'UUP']);
      // For 2023–2024 tickers both come from the context folder, whose days these are.
      expect((await fetchContext(sources, { days: 400 }, { from: '2023-01-01', to: '2024-12-31' })).from).toEqual({ SPY: 'recent', IEF: 'recent' });
    } finally {
      rmSync(old, { recursive: true, force: true });
      rmSync(recent, { recursive: true, force: true });
    }
  });
});
