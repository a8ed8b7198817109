import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sourceError } from './helpers/errors.js';
import { createSource } from '../src/data/sources/create.js';
import { LabelsFileError, dateCell, dateOrder, parseBarsCsv, parseLabelsCsv } from '../src/data/sources/csv.js';
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

describe('parseBarsCsv: dates, prices and volumes as other vendors write them', () => {
  it('reads each date spelling, numeric day and month in the order the file shows', () => {
    expect(['2024/01/02', '2024.1.2', '20240102', 'Jan 2, 2024', 'January 02 2024', 'Sept 3, 2024', '2-Jan-2024', '02 Jan 24', '31 Dec 99'].map((d) => dateCell(d))).toEqual([
      '2024-01-02',
      '2024-01-02',
      '2024-01-02',
      '2024-01-02',
      '2024-01-02',
      '2024-09-03',
      '2024-01-02',
      '2024-01-02',
      '1999-12-31',
    ]);
    expect(dateOrder(['01/02/2024', '01/13/2024'])).toBe('month-first');
    expect(dateOrder(['13.01.2024', '01.02.2024'])).toBe('day-first');
    expect(dateOrder(['01/02/2024', '02/03/2024'])).toBe('ambiguous');
    expect(dateOrder(['13/01/2024', '01/13/2024'])).toBe('ambiguous');
    expect(dateOrder(['2024-01-02'])).toBe('none');
    expect(dateCell('01/02/2024', 'month-first')).toBe('2024-01-02');
    expect(dateCell('01/02/2024', 'day-first')).toBe('2024-02-01');
    expect(dateCell('1-2-24', 'day-first')).toBe('2024-02-01');
    // Unreadable spellings stay as they are, for the cleaner to drop with a count.
    for (const bad of ['01/02/2024', 'Foo 2, 2024', 'Ju 2, 2024', '2024-1-2x', 'yesterday']) expect(dateCell(bad)).toBe(bad);
    expect(cleanBars(parseBarsCsv('date,open,high,low,close\n2024/02/30,1,1,1,1\n', 'X.csv').rows).quality.malformed).toBe(1);
  });

  it('reads $ prices, thousands commas, K/M/B volumes and the column names of Nasdaq and Investing.com', () => {
    const nasdaq = ['Date,Close/Last,Volume,Open,High,Low', '01/03/2024,"$1,184.25",58414460,$1190.00,$1199.5,$1170.10', '01/02/2024,$185.64,82488670,$187.15,$188.44,$183.885'].join('\n');
    const a = parseBarsCsv(nasdaq, 'N.csv');
    expect(a.dateOrder).toBe('ambiguous'); // two days only: neither field passes 12
    expect(a.rows.map((r) => [r.close, r.open, r.volume])).toEqual([
      [1184.25, 1190, 58414460],
      [185.64, 187.15, 82488670],
    ]);
    const investing = ['"Date","Price","Open","High","Low","Vol.","Change %"', '"Jan 03, 2024","184.25","184.22","185.88","183.43","58.41M","-0.75%"', '"Jan 02, 2024","185.64","187.15","188.44","183.89","1.2B","-3.58%"', '"Jan 01, 2024","185.64","187.15","188.44","183.89","-",""'].join('\n');
    const b = parseBarsCsv(investing, 'I.csv');
    expect(b.rows.map((r) => [r.date, r.close, r.volume])).toEqual([
      ['2024-01-03', 184.25, 58410000],
      ['2024-01-02', 185.64, 1.2e9],
      ['2024-01-01', 185.64, null],
    ]);
    const av = parseBarsCsv('timestamp,open,high,low,close,adjusted_close,volume\n2024-01-02,1,2,0.5,1.5,1.4,10k\n', 'AV.csv');
    expect(av.rows[0]).toMatchObject({ date: '2024-01-02', close: 1.5, adjClose: 1.4, volume: 10_000 });
    // Not a number in any of those spellings: NaN, which the cleaner drops and counts.
    expect(parseBarsCsv('date,open,high,low,close\n2024-01-02,1,1,1,"1,23"\n', 'E.csv').rows[0]!.close).toBeNaN();
    expect(() => parseBarsCsv('Date,Open,High,Low,Volume\n', 'NC.csv')).toThrow(/for NC\.csv .*\(no close\)/);
  });
});

describe.skipIf(!haveMarket)('csv source on the development data rewritten as other vendors export it', () => {
  let dir = '';
  const original = readFileSync(path.join(marketDir, 'SPY.csv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split(','));
  const usd = (v: string): string => `"$${Number(v).toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 4 })}"`;
  const MON = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const [y, m, d] = [(r: string[]) => r[0]!.slice(0, 4), (r: string[]) => r[0]!.slice(5, 7), (r: string[]) => r[0]!.slice(8, 10)];

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'data-csv-vendors-'));
    const write = (name: string, header: string, row: (r: string[]) => string, newestFirst: boolean): void => {
      const rows = newestFirst ? [...original].reverse() : original;
      writeFileSync(path.join(dir, `${name}.csv`), [header, ...rows.map(row)].join('\n') + '\n');
    };
    // Nasdaq.com: newest first, US dates, dollar prices with thousands commas, no adjusted close.
    write('NASDAQ', 'Date,Close/Last,Volume,Open,High,Low', (r) => `${m(r)}/${d(r)}/${y(r)},${usd(r[4]!)},${r[6]},${usd(r[1]!)},${usd(r[2]!)},${usd(r[3]!)}`, true);
    // A European export: day first with dots.
    write('EURO', 'Datum,Open,High,Low,Close,Volume'.replace('Datum', 'Date'), (r) => `${d(r)}.${m(r)}.${y(r)},${r[1]},${r[2]},${r[3]},${r[4]},${r[6]}`, false);
    // Investing.com: month names, Price as the close, volumes in millions.
    write('INVESTING', '"Date","Price","Open","High","Low","Vol.","Change %"', (r) => `"${MON[Number(m(r)) - 1]} ${d(r)}, ${y(r)}","${r[4]}","${r[1]}","${r[2]}","${r[3]}","${(Number(r[6]) / 1e6).toFixed(2)}M","0.00%"`, true);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('gives the same days and closes as the original file', async () => {
    const src = createSource({ source: 'csv', dataDir: dir });
    const want = original.map((r) => [r[0], Number(r[4])]);
    for (const name of ['NASDAQ', 'EURO', 'INVESTING']) {
      const res = await src.fetch(name, { days: 10_000 });
      expect(res.bars.map((b) => [b.date, b.close]), name).toEqual(want);
      expect(res.quality.malformed ?? 0, name).toBe(0);
    }
  });

  it('says why a file whose day and month order cannot be told fails', async () => {
    // Only the first twelve days of each month: every date reads either way.
    const early = original.filter((r) => Number(d(r)) <= 12);
    writeFileSync(path.join(dir, 'EARLY.csv'), ['Date,Open,High,Low,Close', ...early.map((r) => `${m(r)}/${d(r)}/${y(r)},${r[1]},${r[2]},${r[3]},${r[4]}`)].join('\n'));
    const err = await sourceError(createSource({ source: 'csv', dataDir: dir }).fetch('EARLY', { days: 100 }));
    expect(err.code).toBe('BAD_DATA');
    expect(err.message).toContain(`0 usable of ${early.length} rows (malformed ${early.length}`);
    expect(err.message).toContain('the file does not show whether the day or the month comes first');
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
