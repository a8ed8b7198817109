import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sourceError } from './helpers/errors.js';
import { createSource } from '../src/data/sources/create.js';
import { LabelsFileError, parseBarsCsv, parseLabelsCsv } from '../src/data/sources/csv.js';
import { cleanBars } from '../src/data/clean.js';
import { simulateBars } from '../src/data/sim/simulator.js';
import { computeFeatures, MIN_HISTORY_BARS, WARMUP_DAYS } from '../src/data/features/compute.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const marketDir = path.resolve(repoRoot, '../shared/market-data');
const haveMarket = existsSync(marketDir);
if (!haveMarket) console.warn(`data-csv: real-data tests skipped, ${marketDir} not found`);

describe.skipIf(!haveMarket)('csv source on the development data', () => {
  const src = createSource({ source: 'csv', dataDir: marketDir });

  it('reads labelled tickers of every domain with the range applied', async () => {
    const want = { AAPL: 'Equities', TLT: 'Fixed Income', GLD: 'Commodities', UVXY: 'Derivatives', COPX: 'Commodities' };
    for (const [t, cls] of Object.entries(want)) {
      const res = await src.fetch(t.toLowerCase(), { days: 250, end: '2024-12-31' });
      expect(res.ticker).toBe(t);
      expect(res.class).toBe(cls);
      expect(res.bars).toHaveLength(250 + WARMUP_DAYS);
      expect(res.bars.at(-1)!.date <= '2024-12-31').toBe(true);
      expect(res.bars.at(-1)!.date >= '2024-12-27').toBe(true);
      const f = computeFeatures(t, res.bars, 16, undefined, { days: 250 });
      expect(f.dates.length).toBe(250);
      expect(f.x.every(Number.isFinite)).toBe(true);
    }
  });

  it('keeps gappy thin ETFs usable and counts their gaps', async () => {
    const res = await src.fetch('FXY', { days: 500 });
    expect(res.quality.gaps).toBeGreaterThan(100);
    const f = computeFeatures('FXY', res.bars, 32);
    expect(f.x.every(Number.isFinite) && f.vol.every(Number.isFinite) && f.risk.every(Number.isFinite)).toBe(true);
  });

  it('says which file is missing', async () => {
    const err = await sourceError(src.fetch('ZZZZ', { days: 10 }));
    expect(err.code).toBe('NO_DATA');
    expect(err.ticker).toBe('ZZZZ');
    expect(err.message).toBe(`Expected file ${path.join(marketDir, 'ZZZZ.csv')} for ZZZZ but received no such file`);
  });
});

describe('csv source on a messy folder', () => {
  let dir = '';
  const n = WARMUP_DAYS + 70;
  const clean = simulateBars('MESSY', { class: 'Equities', subtype: 'stock' }, n, 11, '2024-06-28');
  const splitAt = 70;

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'data-csv-'));
    // Raw close halves at a 2:1 split on day 70; adj_close stays continuous. Volume doubles with the split.
    const lines = clean.map((b, i) => {
      const k = i < splitAt ? 2 : 1;
      const v = b.volume === null ? '' : String(Math.round(b.volume / k));
      return `${b.date},${b.open * k},${b.high * k},${b.low * k},${b.close * k},${b.adjClose},${v}`;
    });
    lines[10] = lines[10]!.replace(/,[^,]*,([^,]*)$/, ',,$1'); // null adj_close
    lines[20] = lines[20]!.split(',').map((c, j) => (j === 4 ? 'NaN' : c)).join(','); // NaN close
    lines[30] = lines[30]!.split(',').map((c, j) => (j === 2 ? '-1' : c)).join(','); // negative high
    lines[40] = lines[40]!.split(',').map((c, j) => (j === 6 ? '' : c)).join(','); // null volume is allowed
    const dup = lines[50]!;
    const rows = [...lines, dup, '2024-01-02,1,2', 'not-a-date,1,1,1,1,1,1'];
    // Unsorted: swap two blocks.
    const shuffled = [...rows.slice(60, 80), ...rows.slice(0, 60), ...rows.slice(80)];
    writeFileSync(path.join(dir, 'MESSY.csv'), `date,open,high,low,close,adj_close,volume\n${shuffled.join('\n')}\n`);
    writeFileSync(path.join(dir, 'SHORT.csv'), `date,open,high,low,close,adj_close,volume\n${lines.slice(0, 30).join('\n')}\n`);
    writeFileSync(path.join(dir, 'JUNK.csv'), `date,open,high,low,close,adj_close,volume\n${lines.slice(0, 70).map((l) => l.replace(/,[^,]*,[^,]*,[^,]*$/, ',x,x,1')).join('\n')}\n`);
    writeFileSync(path.join(dir, 'NOHEAD.csv'), lines.join('\n'));
    writeFileSync(path.join(dir, 'labels.csv'), 'ticker,class,note\nMESSY,equity,"synthetic, with a comma (and the singular, lower-case spelling)"\nSHORT,Bogus,\n');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('cleans nulls, duplicates, disorder and malformed rows and counts each', async () => {
    const res = await createSource({ source: 'csv', dataDir: dir }).fetch('messy', { days: 1000 });
    expect(res.class).toBe('Equities');
    expect(res.quality.nulls).toBe(3);
    expect(res.quality.duplicates).toBe(1);
    expect(res.quality.malformed).toBe(2);
    expect(res.quality.reordered).toBeGreaterThan(0);
    expect(res.quality.splits).toBe(0);
    expect(res.bars).toHaveLength(n - 3);
    const dates = res.bars.map((b) => b.date);
    expect([...dates].sort()).toEqual(dates);
    expect(new Set(dates).size).toBe(dates.length);
    expect(res.bars.find((b) => b.date === clean[40]!.date)!.volume).toBeNull();
    // Before the split the raw close is twice the adjusted one; open/high/low are brought to the adjusted scale.
    const pre = res.bars.find((b) => b.date === clean[5]!.date)!;
    expect(pre.close / pre.adjClose).toBeCloseTo(2, 9);
    expect(pre.open).toBeCloseTo(clean[5]!.open, 9);
    expect(pre.high).toBeCloseTo(clean[5]!.high, 9);
    const f = computeFeatures('MESSY', res.bars, 32);
    expect(f.dates.length).toBe(n - 3 - MIN_HISTORY_BARS + 1);
    expect(f.x.every(Number.isFinite)).toBe(true);
    expect(Math.max(...Array.from(f.ret, Math.abs))).toBeLessThan(0.3);
  });

  it('rejects too short and mostly broken files with counts', async () => {
    const src = createSource({ source: 'csv', dataDir: dir });
    const short = await sourceError(src.fetch('SHORT', { days: 5 }));
    expect(short.code).toBe('NO_DATA');
    expect(short.message).toMatch(
      new RegExp(
        `^Expected at least ${MIN_HISTORY_BARS} clean bars \\(${WARMUP_DAYS + 5} wanted\\) for SHORT in .*SHORT\\.csv but received 28 usable of 30 rows \\(malformed 0, nulls 2, duplicates 0\\)$`,
      ),
    );
    const junk = await sourceError(src.fetch('JUNK', { days: 5 }));
    expect(junk.code).toBe('BAD_DATA');
    expect(junk.message).toMatch(/received 0 usable of 70 rows \(malformed 0, nulls 70/);
    const nohead = await sourceError(src.fetch('NOHEAD', { days: 5 }));
    expect(nohead.code).toBe('BAD_DATA');
    expect(nohead.message).toMatch(/^Expected header with date,open,high,low,close/);
  });

  it('rejects invalid tickers before touching the disk', async () => {
    const err = await sourceError(createSource({ source: 'csv', dataDir: dir }).fetch('../MESSY', { days: 5 }));
    expect(err.code).toBe('UNKNOWN_TICKER');
    expect(err.message).toMatch(/^Expected ticker of 1-15 characters .* for ticker but received "\.\.\/MESSY"$/);
  });
});

describe('cleanBars', () => {
  it('undoes an unapplied split found at both the open and the close', () => {
    const bars = simulateBars('SPLIT', { class: 'Equities', subtype: 'index-etf' }, 100, 5);
    const raw = bars.map((b, i) => {
      const k = i < 50 ? 3 : 1;
      return { ...b, open: b.open * k, high: b.high * k, low: b.low * k, close: b.close * k, adjClose: b.adjClose * k };
    });
    const res = cleanBars(raw);
    expect(res.quality.splits).toBe(1);
    for (let i = 0; i < 100; i++) expect(res.bars[i]!.adjClose).toBeCloseTo(bars[i]!.adjClose, 6);
    expect(res.bars[10]!.volume).toBeCloseTo(bars[10]!.volume! * 3, 3);
  });

  it('keeps a genuine crash that is no exact split ratio', () => {
    const bars = simulateBars('CRASH', { class: 'Equities', subtype: 'stock' }, 80, 5);
    const raw = bars.map((b, i) => (i < 40 ? { ...b, open: b.open * 2.3, high: b.high * 2.3, low: b.low * 2.3, adjClose: b.adjClose * 2.3, close: b.close * 2.3 } : b));
    expect(cleanBars(raw).quality.splits).toBe(0);
  });
});

describe('parseBarsCsv: other vendors\' spellings', () => {
  it('reads Yahoo-style headers (Adj Close) and date-times, keeping the day', () => {
    const text = [
      'Date,Open,High,Low,Close,Adj Close,Volume',
      '2024-01-02 00:00:00-05:00,10,11,9,10.5,10.4,1000',
      '2024-01-03T00:00:00Z,10.5,11.5,10,11,10.9,1200',
      '2024-01-04,11,12,10.5,11.5,11.4,',
    ].join('\n');
    const { rows, malformed } = parseBarsCsv(text, 'Y.csv');
    expect(malformed).toBe(0);
    expect(rows.map((r) => r.date)).toEqual(['2024-01-02', '2024-01-03', '2024-01-04']);
    expect(rows.map((r) => r.adjClose)).toEqual([10.4, 10.9, 11.4]);
    expect(rows[2]!.volume).toBeNull();
  });

  it('takes adjusted_close, and leaves a date it cannot read for the cleaner to drop', () => {
    const { rows } = parseBarsCsv('timestamp_ignored,date,open,high,low,close,adjusted_close\nx,01/02/2024,1,1,1,1,0.5\nx,2024-01-03,1,1,1,1,0.5\n', 'A.csv');
    expect(rows.map((r) => r.adjClose)).toEqual([0.5, 0.5]);
    expect(rows[0]!.date).toBe('01/02/2024');
    const cleaned = cleanBars(rows);
    expect(cleaned.bars.map((b) => b.date)).toEqual(['2024-01-03']);
    expect(cleaned.quality.malformed).toBe(1);
  });
});

describe('labels files', () => {
  const text = 'Class , Ticker\nequity,aapl\nBonds,TLT\n,GLD\nfixed income, ief \n';

  it('strict reading fails on the first bad line, naming it', () => {
    expect(() => parseLabelsCsv(text, 'l.csv', true)).toThrow(LabelsFileError);
    expect(() => parseLabelsCsv(text, 'l.csv', true)).toThrow(/on line 3 of l\.csv but received "Bonds,TLT"/);
    expect(() => parseLabelsCsv('symbol,kind\nAAPL,Equities\n', 'l.csv', true)).toThrow(/header with columns ticker,class for l\.csv/);
  });

  it('lenient reading keeps the good lines and skips the rest', () => {
    expect([...parseLabelsCsv(text, 'l.csv', false)]).toEqual([
      ['AAPL', 'Equities'],
      ['IEF', 'Fixed Income'],
    ]);
    expect(parseLabelsCsv('symbol,kind\nAAPL,Equities\n', 'l.csv', false).size).toBe(0);
  });
});
