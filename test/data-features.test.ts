import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { computeFeatures, FEATURE_SPEC, FEATURE_TABLE, MIN_HISTORY_BARS, WARMUP_DAYS } from '../src/data/features/compute.js';
import { decodeFeatureSeries, encodeFeatureSeries, FeatureBlockError } from '../src/data/features/block.js';
import { simulateBars } from '../src/data/sim/simulator.js';
import { validateTicker } from '../src/data/validate.js';
import { isoToDays } from '../src/data/dates.js';
import type { Bar, FeatureSeries } from '../src/data/types.js';

const bars = simulateBars('SPXL', { class: 'Derivatives', subtype: 'leveraged-3x' }, WARMUP_DAYS + 250, 21);

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('computeFeatures', () => {
  it('emits one token per bar from the minimum history on, with documented shapes', () => {
    expect(FEATURE_SPEC).toMatch(/^v\d+$/);
    expect(FEATURE_TABLE.length).toBeGreaterThanOrEqual(32);
    for (const h of [16, 32] as const) {
      const f = computeFeatures('SPXL', bars, h);
      // v4: one token per bar from bar MIN_HISTORY_BARS − 1 on (v3: from bar WARMUP_DAYS on).
      const n = bars.length - MIN_HISTORY_BARS + 1;
      expect(f.hidden).toBe(h);
      expect(f.x).toHaveLength(n * h);
      expect(f.vol).toHaveLength(n);
      expect(f.dates[0]).toBe(isoToDays(bars[MIN_HISTORY_BARS - 1]!.date));
      expect(f.ret[n - 1]).toBeCloseTo(Math.log(bars[bars.length - 1]!.adjClose / bars[bars.length - 2]!.adjClose), 6);
      for (const v of f.x) expect(Math.abs(v)).toBeLessThanOrEqual(5);
    }
    expect(computeFeatures('SPXL', bars.slice(0, MIN_HISTORY_BARS - 1), 16).dates).toHaveLength(0);
  });

  it('documents every feature in docs/features.md, in table order', () => {
    const doc = readFileSync(new URL('../docs/features.md', import.meta.url), 'utf8');
    FEATURE_TABLE.forEach((f, i) => expect(doc).toContain(`| ${i} | \`${f.name}\` |`));
  });

  it('H = 16 features are the first 16 of the H = 32 ones', () => {
    const a = computeFeatures('SPXL', bars, 16);
    const b = computeFeatures('SPXL', bars, 32);
    for (let i = 0; i < a.dates.length; i++) {
      for (let k = 0; k < 16; k++) expect(a.x[i * 16 + k]).toBe(b.x[i * 32 + k]);
    }
  });

  it('is causal: changing future bars leaves earlier tokens unchanged', () => {
    const cut = WARMUP_DAYS + 120;
    const changed: Bar[] = bars.map((b, i) =>
      i <= cut ? b : { ...b, open: b.open * 1.7, high: b.high * 2, low: b.low * 1.1, close: b.close * 1.5, adjClose: b.adjClose * 1.5, volume: 7 },
    );
    const a = computeFeatures('SPXL', bars, 32);
    const b = computeFeatures('SPXL', changed, 32);
    const upto = cut - MIN_HISTORY_BARS + 2; // tokens of bars MIN_HISTORY_BARS − 1 … cut
    expect(maxAbsDiff(a.x.subarray(0, upto * 32), b.x.subarray(0, upto * 32))).toBe(0);
    expect(maxAbsDiff(a.vol.subarray(0, upto), b.vol.subarray(0, upto))).toBe(0);
    expect(maxAbsDiff(a.risk.subarray(0, upto), b.risk.subarray(0, upto))).toBe(0);
    expect(maxAbsDiff(a.x.subarray(upto * 32), b.x.subarray(upto * 32))).toBeGreaterThan(0.1);
  });

  it('is scale-invariant in price and volume', () => {
    for (const spec of [
      { class: 'Fixed Income', subtype: 'treasury-short' },
      { class: 'Equities', subtype: 'stock' },
      { class: 'Derivatives', subtype: 'volatility-long' },
    ] as const) {
      const src = simulateBars('SCALE', spec, WARMUP_DAYS + 80, 8);
      const scaled = src.map((b) => ({
        ...b,
        open: b.open * 10,
        high: b.high * 10,
        low: b.low * 10,
        close: b.close * 10,
        adjClose: b.adjClose * 10,
        volume: b.volume === null ? null : b.volume * 50,
      }));
      const a = computeFeatures('A', src, 32);
      const b = computeFeatures('A', scaled, 32);
      expect(maxAbsDiff(a.x, b.x)).toBeLessThan(1e-5);
      expect(maxAbsDiff(a.vol, b.vol)).toBeLessThan(1e-5);
      expect(maxAbsDiff(a.risk, b.risk)).toBeLessThan(1e-5);
    }
  });

  it('stays finite on gaps, flat prices and missing volume', () => {
    const gappy = simulateBars('GAPPY', { class: 'Commodities', subtype: 'agriculture' }, WARMUP_DAYS + 300, 4).filter((_, i) => i % 3 !== 1 || i < 5);
    const flat = bars.map((b) => ({ ...b, open: 50, high: 50, low: 50, close: 50, adjClose: 50 }));
    const noVolume = bars.map((b, i) => ({ ...b, volume: i % 2 ? null : 0 }));
    for (const series of [gappy, flat, noVolume]) {
      const f = computeFeatures('G', series, 32);
      expect(f.dates.length).toBe(series.length - MIN_HISTORY_BARS + 1);
      for (const arr of [f.x, f.vol, f.risk, f.ret]) expect(arr.every(Number.isFinite)).toBe(true);
    }
  });

  it('separates a cash fund, a long bond fund and a volatility ETN on their volatility features', () => {
    const vol = (spec: { class: 'Fixed Income' | 'Derivatives'; subtype: string }): number => {
      const f = computeFeatures('V', simulateBars(`V-${spec.subtype}`, spec, WARMUP_DAYS + 100, 3), 16);
      let s = 0;
      for (let i = 0; i < f.dates.length; i++) s += f.x[i * 16 + 1]!;
      return s / f.dates.length;
    };
    const cash = vol({ class: 'Fixed Income', subtype: 'cash-like' });
    const bond = vol({ class: 'Fixed Income', subtype: 'treasury-long' });
    const vix = vol({ class: 'Derivatives', subtype: 'volatility-long' });
    expect(cash).toBeLessThan(bond - 1.5);
    // One unit is a factor 3.3 in volatility (real TLT 1.0 %/day against VXX 4.3 %: 1.2 units).
    expect(bond).toBeLessThan(vix - 1);
  });
});

describe('feature block', () => {
  const series = (h: 16 | 32): FeatureSeries => computeFeatures('BRK.B', bars, h);

  it('round-trips exactly for both sizes', () => {
    for (const h of [16, 32] as const) {
      const s = series(h);
      const buf = encodeFeatureSeries(s);
      expect(buf.toString('latin1', 0, 4)).toBe('MOEF');
      const d = decodeFeatureSeries(buf);
      expect(d.ticker).toBe('BRK.B');
      expect(d.hidden).toBe(h);
      expect(Array.from(d.dates)).toEqual(Array.from(s.dates));
      for (const k of ['x', 'vol', 'risk', 'ret'] as const) expect(Array.from(d[k])).toEqual(Array.from(s[k]));
    }
    const empty = decodeFeatureSeries(encodeFeatureSeries(computeFeatures('E', bars.slice(0, 10), 16)));
    expect(empty.dates).toHaveLength(0);
  });

  it('lays every value out little-endian and decodes a block at any byte offset', () => {
    const s = series(16);
    const buf = encodeFeatureSeries(s);
    // The layout written value by value, as the format table says.
    let o = buf.length - 4 * s.dates.length * (4 + 16);
    for (const d of s.dates) expect(buf.readInt32LE((o += 4) - 4)).toBe(d);
    for (const arr of [s.x, s.vol, s.risk, s.ret]) for (const v of arr) expect(buf.readFloatLE((o += 4) - 4)).toBe(v);
    expect(o).toBe(buf.length);
    // A block read out of a larger reply sits at an odd offset of its memory: the copy must not assume alignment.
    for (const shift of [1, 2, 3]) {
      const big = Buffer.alloc(buf.length + shift);
      buf.copy(big, shift);
      const d = decodeFeatureSeries(big.subarray(shift));
      expect(Array.from(d.dates)).toEqual(Array.from(s.dates));
      expect(Array.from(d.x)).toEqual(Array.from(s.x));
      expect(Array.from(d.ret)).toEqual(Array.from(s.ret));
    }
  });

  it('rejects wrong or short buffers with a clear error', () => {
    const s16 = series(16);
    const buf = encodeFeatureSeries(s16);
    const days = s16.dates.length;
    expect(() => decodeFeatureSeries(buf.subarray(0, buf.length - 4))).toThrow(
      new RegExp(`^Expected ${buf.length} bytes for feature block \\(days ${days}, hidden 16\\) but received ${buf.length - 4}$`),
    );
    expect(() => decodeFeatureSeries(Buffer.from('not a block at all'))).toThrow(FeatureBlockError);
    expect(() => decodeFeatureSeries(Buffer.alloc(3))).toThrow(/^Expected feature block starting with magic MOEF/);
    const wrongVersion = Buffer.from(buf);
    wrongVersion.writeUInt16LE(9, 4);
    expect(() => decodeFeatureSeries(wrongVersion)).toThrow(/^Expected version 1 for feature block but received 9$/);
    const wrongHidden = Buffer.from(buf);
    wrongHidden.writeUInt16LE(8, 6);
    expect(() => decodeFeatureSeries(wrongHidden)).toThrow(/^Expected hidden 16 or 32 for feature block but received 8$/);
    expect(() => encodeFeatureSeries({ ...s16, vol: s16.vol.subarray(1) })).toThrow(
      new RegExp(`^Expected length ${days} for vol of BRK.B but received ${days - 1}$`),
    );
  });
});

describe('validateTicker', () => {
  it('upper-cases good tickers', () => {
    for (const t of ['aapl', 'BRK.B', 'BRK^B', 'GC=F', 'EURUSD=X', 'AZT.OL', '0P000071W8.TO']) {
      expect(validateTicker(t)).toBe(t.toUpperCase());
    }
  });

  it('rejects bad ones with the message shape', () => {
    for (const t of ['', ' AAPL', '^VIX', 'A/B', '../x', '.HIDDEN', 'AAAAAAAAAAAAAAAA', 'A B', 'moe:run:1']) {
      expect(() => validateTicker(t)).toThrow(TypeError);
      expect(() => validateTicker(t)).toThrow(/^Expected ticker of 1-15 characters .* for ticker but received ".*"$/);
    }
    expect(() => validateTicker(42 as unknown as string)).toThrow(/^Expected ticker string for ticker but received number$/);
  });
});
