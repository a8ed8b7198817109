import { describe, expect, it } from 'vitest';
import { DEFAULT_SIM_END, degradeContext, simulateBars, simulateContext, simulateContextBars, trainingSet } from '../src/data/sim/simulator.js';
import { Rng } from '../src/util/random.js';
import { scaleHistory } from '../src/data/features/context.js';
import { DEFAULT_UNIVERSE, knownClass, parseSimTicker, simTicker, SUBTYPES } from '../src/data/universe.js';
import { createSource, SourceError } from '../src/data/sources/create.js';
import { DOMAINS } from '../src/domains.js';
import { WARMUP_DAYS } from '../src/data/features/compute.js';
import { validateTicker } from '../src/data/validate.js';
import { REGIME_FAMILIES, type RegimeFamily } from '../src/data/sim/regimes.js';

/** Root-mean-square daily log return of a bar series. */
function dailyVol(bars: { adjClose: number }[]): number {
  let s = 0;
  for (let i = 1; i < bars.length; i++) s += Math.log(bars[i]!.adjClose / bars[i - 1]!.adjClose) ** 2;
  return Math.sqrt(s / (bars.length - 1));
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe('universe', () => {
  it('has at least 10 tickers per domain, each with a valid sub-type', () => {
    for (const d of DOMAINS) {
      const members = DEFAULT_UNIVERSE.filter((u) => u.class === d);
      expect(members.length).toBeGreaterThanOrEqual(10);
      for (const m of members) expect(SUBTYPES[d] as readonly string[]).toContain(m.subtype);
    }
    expect(new Set(DEFAULT_UNIVERSE.map((u) => u.ticker)).size).toBe(DEFAULT_UNIVERSE.length);
    for (const u of DEFAULT_UNIVERSE) expect(validateTicker(u.ticker)).toBe(u.ticker);
  });

  it('knows classes case-insensitively and encodes synthetic tickers that pass validation', () => {
    expect(knownClass('tlt')).toEqual({ class: 'Fixed Income', subtype: 'treasury-long' });
    expect(knownClass('UVXY')).toEqual({ class: 'Derivatives', subtype: 'volatility-long' });
    expect(knownClass('NOPE')).toBeUndefined();
    for (const subs of Object.values(SUBTYPES)) {
      for (const s of subs) {
        const t = simTicker(s, 123);
        expect(validateTicker(t)).toBe(t);
        expect(parseSimTicker(t)?.subtype).toBe(s);
      }
    }
    expect(parseSimTicker('SIM-EQ-L3X-001')).toBeUndefined(); // code of a Derivatives sub-type under EQ
  });
});

describe('simulateBars', () => {
  it('is deterministic per seed and differs across seeds and tickers', () => {
    const spec = { class: 'Equities', subtype: 'stock' } as const;
    const a = simulateBars('AAPL', spec, 300, 42);
    expect(simulateBars('AAPL', spec, 300, 42)).toEqual(a);
    const b = simulateBars('AAPL', spec, 300, 43);
    const c = simulateBars('MSFT', spec, 300, 42);
    expect(b.map((x) => x.close)).not.toEqual(a.map((x) => x.close));
    expect(c.map((x) => x.close)).not.toEqual(a.map((x) => x.close));
  });

  it('returns consistent business-day OHLCV bars ending at the requested day', () => {
    const bars = simulateBars('GLD', { class: 'Commodities', subtype: 'precious-metals' }, 500, 1);
    expect(bars).toHaveLength(500);
    expect(bars.at(-1)!.date).toBe(DEFAULT_SIM_END);
    expect(simulateBars('GLD', { class: 'Commodities', subtype: 'precious-metals' }, 10, 1, '2024-03-03').at(-1)!.date).toBe('2024-03-01');
    for (let i = 0; i < bars.length; i++) {
      const b = bars[i]!;
      const wd = new Date(`${b.date}T00:00:00Z`).getUTCDay();
      expect(wd >= 1 && wd <= 5).toBe(true);
      if (i > 0) expect(b.date > bars[i - 1]!.date).toBe(true);
      expect(b.low).toBeLessThanOrEqual(Math.min(b.open, b.close));
      expect(b.high).toBeGreaterThanOrEqual(Math.max(b.open, b.close));
      expect(b.low).toBeGreaterThan(0);
      expect(b.volume).toBeGreaterThan(0);
      expect(b.adjClose).toBe(b.close);
    }
  });

  it('rejects a sub-type that does not belong to the class, with the message shape', () => {
    expect(() => simulateBars('X', { class: 'Equities', subtype: 'cash-like' }, 100, 1)).toThrow(
      /^Expected class Fixed Income for subtype cash-like of X but received "Equities"$/,
    );
    expect(() => simulateBars('X', { class: 'Equities', subtype: 'bitcoin' }, 100, 1)).toThrow(/^Expected one of stock, index-etf, .* for subtype of X but received "bitcoin"$/);
    expect(() => simulateBars('X', { class: 'Equities', subtype: 'stock' }, 1.5, 1)).toThrow(/^Expected integer in \[2, 100000\] for days but received 1.5$/);
  });

  it('gives each sub-type a realistic daily volatility (median over instruments)', () => {
    const set = trainingSet({ seed: 9, tickersPerSubtype: 7, days: 750, gappyShare: 0 });
    const bounds: Record<string, [number, number]> = {
      'cash-like': [0.0001, 0.0006],
      'treasury-short': [0.0005, 0.002],
      'treasury-long': [0.005, 0.013],
      aggregate: [0.0025, 0.005],
      'credit-ig': [0.003, 0.007],
      'credit-hy': [0.003, 0.0065],
      muni: [0.0015, 0.004],
      tips: [0.002, 0.005],
      stock: [0.012, 0.035],
      'index-etf': [0.008, 0.016],
      'precious-metals': [0.007, 0.02],
      'industrial-metals': [0.009, 0.02],
      energy: [0.017, 0.042],
      agriculture: [0.008, 0.02],
      'broad-basket': [0.007, 0.016],
      'leveraged-2x': [0.017, 0.035],
      'leveraged-3x': [0.025, 0.055],
      inverse: [0.01, 0.045],
      'volatility-long': [0.035, 0.075],
      'volatility-short': [0.015, 0.035],
      'fx-trust': [0.003, 0.007],
    };
    for (const [sub, [lo, hi]] of Object.entries(bounds)) {
      const v = median(set.filter((s) => s.subtype === sub).map((s) => dailyVol(s.bars)));
      expect(v, `${sub} daily vol ${(v * 100).toFixed(3)} %`).toBeGreaterThanOrEqual(lo);
      expect(v, `${sub} daily vol ${(v * 100).toFixed(3)} %`).toBeLessThanOrEqual(hi);
    }
  });

  it('draws each regime family at the equity volatility of the history it cites', () => {
    // Realised volatility of the equity context over a 1,000-day history (annualised), median of six histories: the
    // published ranges of regimes.ts (2017 6.7 %, 2000–02 22–26 %, 2008 41 % for the year and 60–80 % at its worst,
    // 2020 34 % for the year, 2022 24 %).
    const bands: Partial<Record<RegimeFamily, [number, number]>> = {
      recent: [0.15, 0.22],
      'calm-bull': [0.06, 0.12],
      'dotcom-bust': [0.2, 0.3],
      'crisis-2008': [0.4, 0.65],
      'crash-2020': [0.28, 0.45],
      'rate-shock-2022': [0.2, 0.3],
    };
    const annualVol = (family: RegimeFamily, seed: number) => dailyVol(simulateContextBars(seed, 1000, DEFAULT_SIM_END, family).get('SPY')!) * Math.sqrt(252);
    for (const family of REGIME_FAMILIES) {
      const v = median([101, 102, 103, 104, 105, 106].map((seed) => annualVol(family, seed)));
      const [lo, hi] = bands[family] ?? [0.1, 0.22];
      expect(v, `${family}: ${(100 * v).toFixed(1)} % a year`).toBeGreaterThanOrEqual(lo);
      expect(v, `${family}: ${(100 * v).toFixed(1)} % a year`).toBeLessThanOrEqual(hi);
    }
    // 2020's crash: a fall of a quarter or more within 23 trading days, in most histories of the family.
    const deepest = (seed: number) => {
      const spy = simulateContextBars(seed, 1000, DEFAULT_SIM_END, 'crash-2020').get('SPY')!;
      let worst = 0;
      for (let i = 0; i + 23 < spy.length; i++) worst = Math.min(worst, Math.log(spy[i + 23]!.adjClose / spy[i]!.adjClose));
      return worst;
    };
    expect(median([101, 102, 103, 104, 105, 106].map(deepest))).toBeLessThan(-0.25);
  });

  it('makes leveraged and volatility products decay and keeps cash flat', () => {
    const set = trainingSet({ seed: 4, tickersPerSubtype: 6, days: 1000, gappyShare: 0 });
    const drift = (sub: string): number =>
      median(set.filter((s) => s.subtype === sub).map((s) => Math.log(s.bars.at(-1)!.adjClose / s.bars[0]!.adjClose) / 1000));
    expect(drift('volatility-long')).toBeLessThan(-0.001);
    expect(Math.abs(drift('cash-like'))).toBeLessThan(0.0003);
  });

  it('gives a share of instruments as a close-only vendor does, on its own random stream', () => {
    const flat = (b: { open: number; high: number; low: number; close: number }) => b.open === b.close && b.high === b.close && b.low === b.close;
    const opts = { seed: 6, tickersPerSubtype: 10, days: 120, gappyShare: 0 };
    const some = trainingSet({ ...opts, closeOnlyShare: 0.2 });
    const none = trainingSet({ ...opts, closeOnlyShare: 0 });
    const closeOnly = some.filter((s) => s.bars.every(flat)).length;
    expect(closeOnly / some.length).toBeGreaterThan(0.12);
    expect(closeOnly / some.length).toBeLessThan(0.28);
    expect(none.filter((s) => s.bars.every(flat))).toHaveLength(0);
    // The same closes either way: only the bars' open, high and low go.
    some.forEach((s, i) => expect(s.bars.map((b) => b.adjClose)).toEqual(none[i]!.bars.map((b) => b.adjClose)));
  });

  it('moves base-metal funds with stocks and against the dollar, and foreign havens with bonds', () => {
    const set = trainingSet({ seed: 8, tickersPerSubtype: 12, days: 750, gappyShare: 0, closeOnlyShare: 0, marketPaths: 1 });
    const ctx = simulateContextBars(8, 750);
    const ret = (bars: { adjClose: number }[]) => bars.slice(1).map((b, i) => Math.log(b.adjClose / bars[i]!.adjClose));
    const corr = (a: number[], b: number[]): number => {
      const ma = a.reduce((x, y) => x + y) / a.length;
      const mb = b.reduce((x, y) => x + y) / b.length;
      let ab = 0, aa = 0, bb = 0;
      a.forEach((v, i) => { ab += (v - ma) * (b[i]! - mb); aa += (v - ma) ** 2; bb += (b[i]! - mb) ** 2; });
      return ab / Math.sqrt(aa * bb);
    };
    const with_ = (sub: string, ticker: string) => median(set.filter((s) => s.subtype === sub).map((s) => corr(ret(s.bars), ret(ctx.get(ticker)!))));
    // DBB 2020–2025: SPY +0.29, DBC +0.55, UUP −0.38.
    expect(with_('industrial-metals', 'SPY')).toBeGreaterThan(0.1);
    expect(with_('industrial-metals', 'DBC')).toBeGreaterThan(0.25);
    expect(with_('industrial-metals', 'UUP')).toBeLessThan(-0.1);
    // Some foreign currencies are havens: the trusts' highest correlation with IEF is a bond fund's (FXY +0.52; the
    // dollar's own link to rates alone gives at most ≈ 0.4).
    const fxRates = set.filter((s) => s.subtype === 'fx-trust').map((s) => corr(ret(s.bars), ret(ctx.get('IEF')!)));
    expect(Math.max(...fxRates)).toBeGreaterThan(0.5);
  });

  it('scales whole market histories, instruments and context alike, by one factor each', () => {
    const opts = { seed: 9, tickersPerSubtype: 2, days: 160, gappyShare: 0, closeOnlyShare: 0, marketPaths: 4 };
    const plain = trainingSet(opts);
    const scaled = trainingSet({ ...opts, volScaleShare: 1, volScaleRange: [0.5, 2] as const });
    const ret = (v: readonly number[]) => v.slice(1).map((x, i) => Math.log(x / v[i]!));
    const ks = new Set<string>();
    scaled.forEach((s, i) => {
      const p = plain[i]!;
      const a = ret(p.bars.map((b) => b.adjClose)), b = ret(s.bars.map((b) => b.adjClose));
      const big = a.reduce((m, x, t) => (Math.abs(x) > Math.abs(a[m]!) ? t : m), 0);
      const k = b[big]! / a[big]!;
      expect(k).toBeGreaterThanOrEqual(0.5 - 1e-9);
      expect(k).toBeLessThanOrEqual(2 + 1e-9);
      // Every return of the series, its closes' and its ranges' log distances, times the same k.
      b.forEach((r, t) => expect(r).toBeCloseTo(k * a[t]!, 9));
      s.bars.forEach((bar, t) => expect(Math.log(bar.high / bar.close)).toBeCloseTo(k * Math.log(p.bars[t]!.high / p.bars[t]!.close), 9));
      expect(s.bars.map((b) => b.date)).toEqual(p.bars.map((b) => b.date));
      // Its context with it (the same history's factor), where it has one.
      const c = s.context.find((x) => x !== null), cp = p.context.find((x) => x !== null);
      if (c && cp) expect((c.logClose[20]! - c.logClose[19]!) / (cp.logClose[20]! - cp.logClose[19]!)).toBeCloseTo(k, 6);
      ks.add(k.toFixed(6));
    });
    expect(ks.size).toBeGreaterThan(1);
    expect(ks.size).toBeLessThanOrEqual(4);
    // Bit for bit what scaleHistory makes of the plain bars with its history's factor: one of the four histories'
    // factors, drawn as the simulator draws them.
    const factor = (marketSeed: number) => {
      const r = Rng.derive(marketSeed, 'vol-scale');
      r.next();
      return Math.exp(r.uniform(Math.log(0.5), Math.log(2)));
    };
    const histories = [opts.seed, ...[1, 2, 3].map((j) => Rng.derive(opts.seed, `market-path:${j}`).int(2 ** 31))];
    scaled.forEach((s, i) => expect(histories.some((m) => JSON.stringify(scaleHistory(plain[i]!.bars, factor(m))) === JSON.stringify(s.bars))).toBe(true));
    expect(trainingSet({ ...opts, volScaleShare: 0 })).toEqual(plain);
    expect(() => trainingSet({ ...opts, volScaleShare: 1.5 })).toThrow(/volScaleShare in \[0, 1\]/);
  });

  it('scales only the instruments with their whole context when asked, the others as they were', () => {
    const opts = { seed: 9, tickersPerSubtype: 2, days: 160, gappyShare: 0, closeOnlyShare: 0, marketPaths: 4, contextDropout: 0.5 };
    const plain = trainingSet(opts);
    const all = trainingSet({ ...opts, volScaleShare: 1, volScaleRange: [1.5, 2] as const });
    const whole = trainingSet({ ...opts, volScaleShare: 1, volScaleRange: [1.5, 2] as const, volScaleWholeContextOnly: true });
    let kept = 0;
    whole.forEach((s, i) => {
      const asPlain = JSON.stringify(s.bars) === JSON.stringify(plain[i]!.bars);
      const asAll = JSON.stringify(s.bars) === JSON.stringify(all[i]!.bars);
      expect(asPlain !== asAll, s.ticker).toBe(true);
      // Kept: its context is a degraded one, unscaled; scaled: its whole context, scaled with it.
      expect(s.context).toEqual((asPlain ? plain : all)[i]!.context);
      // The whole context is one object per market history, shared; one changed by the dropout is the instrument's
      // own (a dropout draw may also leave it whole: kept too).
      const shared = plain.some((o, j) => j !== i && o.context === plain[i]!.context);
      if (!shared) expect(asPlain, s.ticker).toBe(true);
      if (asPlain) kept += 1;
    });
    expect(kept).toBeGreaterThan(whole.length * 0.2);
    expect(kept).toBeLessThan(whole.length * 0.8);
  });

  it('degrades a context in the reference funds\' listing order when asked: the first k series, later ones starting later', () => {
    const full = simulateContext(5, 400);
    const rng = Rng.derive(3, 'inception');
    const patterns = new Set<string>();
    let spyOnly = 0;
    for (let i = 0; i < 400; i++) {
      const c = degradeContext(full, rng, 1);
      const present = c.map((s) => s !== null);
      const k = present.indexOf(false) === -1 ? present.length : present.indexOf(false);
      // A prefix of SPY, IEF, GLD, DBC, UUP: nothing after the first missing series.
      expect(present.slice(k).every((p) => !p), JSON.stringify(present)).toBe(true);
      expect(k).toBeGreaterThanOrEqual(1);
      const starts = c.slice(0, k).map((s, j) => full[j]!.dates.length - s!.dates.length);
      for (let j = 1; j < k; j++) expect(starts[j]!).toBeGreaterThanOrEqual(starts[j - 1]!);
      // A late series is the tail of the whole one, never reshaped.
      c.slice(0, k).forEach((s, j) => expect(s!.dates[0]).toBe(full[j]!.dates[starts[j]!]));
      if (k === 1) spyOnly += 1;
      patterns.add(c.map((s, j) => (s === null ? '-' : s.dates.length === full[j]!.dates.length ? 'W' : 'l')).join(''));
    }
    expect(spyOnly).toBeGreaterThan(40);
    expect(patterns.size).toBeGreaterThan(12);
    // Share 0 draws as before: the same generator state gives the same context with the argument left out.
    const a = degradeContext(full, Rng.derive(4, 'x'), 0), b = degradeContext(full, Rng.derive(4, 'x'));
    expect(a).toEqual(b);
    const opts = { seed: 9, tickersPerSubtype: 1, days: 120, contextDropout: 0.5 };
    expect(trainingSet({ ...opts, contextInceptionShare: 0 })).toEqual(trainingSet(opts));
    expect(trainingSet({ ...opts, contextInceptionShare: 1 })).not.toEqual(trainingSet(opts));
    expect(() => trainingSet({ ...opts, contextInceptionShare: 2 })).toThrow('Expected a share in [0, 1] for contextInceptionShare but received 2');
  });

  it('stands in for the broad reference series of a share of degraded contexts with medians of the history\'s other instruments', () => {
    const opts = { seed: 9, tickersPerSubtype: 2, days: 300, contextDropout: 1, marketPaths: 1, gappyShare: 0, closeOnlyShare: 0 };
    const plain = trainingSet(opts);
    expect(trainingSet({ ...opts, standInShare: 0 })).toEqual(plain);
    const standIn = trainingSet({ ...opts, standInShare: 1 });
    // The instruments are the same; only their contexts differ.
    expect(standIn.map((s) => s.bars)).toEqual(plain.map((s) => s.bars));
    const spy = simulateContext(9, 300, DEFAULT_SIM_END, 'recent')[0]!;
    const moves = (c: { dates: Int32Array; logClose: Float64Array }) => new Map(Array.from(c.dates.subarray(1), (d, i) => [d, c.logClose[i + 1]! - c.logClose[i]!]));
    const spyMoves = moves(spy);
    const correlation = (c: { dates: Int32Array; logClose: Float64Array }): number => {
      const pairs = [...moves(c)].filter(([d]) => spyMoves.has(d)).map(([d, r]) => [r, spyMoves.get(d)!] as const);
      const mean = (k: 0 | 1) => pairs.reduce((a, p) => a + p[k], 0) / pairs.length;
      const [ma, mb] = [mean(0), mean(1)];
      let ab = 0, aa = 0, bb = 0;
      for (const [a, b] of pairs) (ab += (a - ma) * (b - mb)), (aa += (a - ma) ** 2), (bb += (b - mb) ** 2);
      return ab / Math.sqrt(aa * bb);
    };
    let whole = 0;
    const correlations: number[] = [];
    for (const s of standIn) {
      const [equity, , gold, , dollar] = s.context;
      // The equity stand-in always has its members (the extra stocks and the history's own equities) and moves with the
      // market: the median of as few as three stocks (now and then with a stray fund) is noisier than a folder's.
      expect(equity).not.toBeNull();
      correlations.push(correlation(equity!));
      if (equity!.ticker === 'SPY~') {
        // Stand-ins on every day: no single-asset series beside them.
        whole++;
        expect(gold).toBeNull();
        expect(dollar).toBeNull();
        expect(equity!.dates).toHaveLength(300);
      }
    }
    expect(Math.min(...correlations)).toBeGreaterThan(0.3);
    expect(correlations.reduce((a, c) => a + c, 0) / correlations.length).toBeGreaterThan(0.7);
    expect(whole).toBeGreaterThan(standIn.length / 4);
    expect(whole).toBeLessThan((3 * standIn.length) / 4);
    expect(() => trainingSet({ ...opts, standInShare: 2 })).toThrow('Expected a share in [0, 1] for standInShare but received 2');
  });

  it('labels the training set and drops days from a share of it', () => {
    const set = trainingSet({ seed: 2, tickersPerSubtype: 2, days: 200, gappyShare: 0.5 });
    expect(set).toHaveLength(2 * Object.values(SUBTYPES).flat().length);
    for (const s of set) expect(parseSimTicker(s.ticker)).toEqual({ class: s.class, subtype: s.subtype });
    expect(set.some((s) => s.bars.length < 200)).toBe(true);
    expect(set.some((s) => s.bars.length === 200)).toBe(true);
  });
});

describe('sim source', () => {
  it('serves the universe and synthetic tickers with classes, warm-up included', async () => {
    const src = createSource({ source: 'sim', seed: 3 });
    const tlt = await src.fetch('tlt', { days: 30 });
    expect(tlt).toMatchObject({ ticker: 'TLT', class: 'Fixed Income', subtype: 'treasury-long' });
    expect(tlt.bars).toHaveLength(30 + WARMUP_DAYS);
    expect(tlt.bars.at(-1)!.date).toBe(DEFAULT_SIM_END);
    const syn = await src.fetch('SIM-DE-VOL-004', { days: 5, end: '2024-01-05' });
    expect(syn).toMatchObject({ class: 'Derivatives', subtype: 'volatility-long' });
    expect(syn.bars.at(-1)!.date).toBe('2024-01-05');
    expect((await createSource({ source: 'sim', seed: 3 }).fetch('TLT', { days: 30 })).bars).toEqual(tlt.bars);
  });

  it('rejects unknown and invalid tickers with UNKNOWN_TICKER', async () => {
    const src = createSource({ source: 'sim' });
    const e1 = await src.fetch('ZZZZ', { days: 5 }).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(SourceError);
    expect((e1 as SourceError).code).toBe('UNKNOWN_TICKER');
    expect((e1 as SourceError).message).toMatch(/^Expected a ticker of the built-in universe or SIM-.* for ZZZZ but received an unknown ticker$/);
    const e2 = await src.fetch('a b', { days: 5 }).catch((e: unknown) => e);
    expect((e2 as SourceError).code).toBe('UNKNOWN_TICKER');
    await expect(src.fetch('SPY', { days: 0 })).rejects.toThrow(/^Expected integer in \[1, 10000\] for range.days but received 0$/);
  });
});

describe('leveraged funds with a known underlying', () => {
  const logReturns = (bars: { adjClose: number }[]) => bars.slice(1).map((b, i) => Math.log(b.adjClose / bars[i]!.adjClose));
  const corr = (a: number[], b: number[]) => {
    const n = Math.min(a.length, b.length);
    const ma = a.slice(0, n).reduce((x, y) => x + y, 0) / n;
    const mb = b.slice(0, n).reduce((x, y) => x + y, 0) / n;
    let sab = 0, saa = 0, sbb = 0;
    for (let i = 0; i < n; i++) {
      sab += (a[i]! - ma) * (b[i]! - mb);
      saa += (a[i]! - ma) ** 2;
      sbb += (b[i]! - mb) ** 2;
    }
    return sab / Math.sqrt(saa * sbb);
  };

  it('tracks the market it names: the universe marks its index funds, and a spec may name gold or oil', () => {
    expect(knownClass('qld')).toEqual({ class: 'Derivatives', subtype: 'leveraged-2x', underlying: 'equity' });
    expect(knownClass('SPY')).toEqual({ class: 'Equities', subtype: 'index-etf' });
    const market = logReturns(simulateContextBars(3, 400).get('SPY')!);
    const gold = logReturns(simulateContextBars(3, 400).get('GLD')!);
    const spec = (underlying: 'equity' | 'gold') => ({ class: 'Derivatives' as const, subtype: 'leveraged-2x', underlying });
    // Several tickers: without the hint about two in three would track equities, one in twelve gold.
    for (const t of ['SIM-DE-L2X-000', 'SIM-DE-L2X-001', 'SIM-DE-L2X-002', 'SIM-DE-L2X-003']) {
      expect(corr(logReturns(simulateBars(t, spec('equity'), 400, 3)), market), t).toBeGreaterThan(0.8);
      expect(corr(logReturns(simulateBars(t, spec('gold'), 400, 3)), gold), t).toBeGreaterThan(0.8);
    }
  });

  it('rejects an underlying on other sub-types and unknown underlyings', () => {
    expect(() => simulateBars('X', { class: 'Equities', subtype: 'stock', underlying: 'equity' }, 300, 1)).toThrow(/Expected no underlying for subtype stock of X/);
    expect(() => simulateBars('X', { class: 'Derivatives', subtype: 'inverse', underlying: 'bitcoin' as 'gold' }, 300, 1)).toThrow(
      /Expected one of equity, rates, gold, silver, oil, natgas for underlying of X but received "bitcoin"/,
    );
  });
});
