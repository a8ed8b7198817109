import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOMAINS } from '../src/domains.js';
import {
  EvaluationError,
  evaluateDirectory,
  evaluationJson,
  formatConfident,
  formatEvaluation,
  majorityDomain,
  metricsByYear,
  parseLabels,
  summarisePredictions,
  calibrationNoise,
  yearOfDays,
  type TickerPrediction,
} from '../src/training/evaluate.js';
import { DEFAULT_MODEL_PATH, initParams, loadModel, saveModel } from '../src/router/model.js';
import { simulateBars } from '../src/data/sim/simulator.js';
import { isoToDays } from '../src/data/dates.js';
import { UNCERTAIN_CONFIDENCE } from '../src/limits.js';
import type { Bar } from '../src/data/types.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const marketData = path.resolve(repoRoot, '../shared/market-data');
const haveMarketData = existsSync(path.join(marketData, 'labels.csv'));
const run = promisify(execFile);

function pred(ticker: string, label: number, assign: number[], conf = 0.7): TickerPrediction {
  const probs = new Float32Array(assign.length * 4);
  assign.forEach((a, n) => {
    for (let d = 0; d < 4; d++) probs[n * 4 + d] = d === a ? conf : (1 - conf) / 3;
  });
  return { ticker, label, assign: Uint8Array.from(assign), probs };
}

describe('evaluation metrics', () => {
  it('computes per-day, per-ticker, per-class accuracy and the confusion matrix', () => {
    const m = summarisePredictions([
      pred('A', 0, [0, 0, 1, 0]), // ticker right, 3/4 days
      pred('B', 1, [2, 2, 1]), // ticker wrong (Commodities), 1/3 days
      pred('C', 3, [3, 3]), // right, 2/2
    ]);
    expect(m.tickers).toBe(3);
    expect(m.days).toBe(9);
    expect(m.perDay.accuracy).toBeCloseTo(6 / 9, 12);
    expect(m.perTicker.accuracy).toBeCloseTo(2 / 3, 12);
    expect(m.perTicker.byClass['Fixed Income']).toEqual({ accuracy: 0, correct: 0, total: 1 });
    expect(m.perTicker.byClass.Commodities).toEqual({ accuracy: null, correct: 0, total: 0 });
    expect(m.perDay.byClass.Equities).toEqual({ accuracy: 0.75, correct: 3, total: 4 });
    expect(m.confusion).toEqual([
      [1, 0, 0, 0],
      [0, 0, 1, 0],
      [0, 0, 0, 0],
      [0, 0, 0, 1],
    ]);
    expect(m.perDay.confusion[1]).toEqual([0, 1, 2, 0]);
    expect(m.meanConfidence).toBeCloseTo(0.7, 6);
    // All days at confidence 0.7 fall in one bin: ECE = |accuracy − 0.7|.
    expect(m.ece).toBeCloseTo(Math.abs(6 / 9 - 0.7), 6);
    expect(m.outcomes[1]).toMatchObject({ ticker: 'B', label: 'Fixed Income', predicted: 'Commodities', share: 2 / 3 });
  });

  it('lists tickers below UNCERTAIN_CONFIDENCE apart and reports accuracy on the confident rest', () => {
    const low = UNCERTAIN_CONFIDENCE - 0.1;
    const m = summarisePredictions([
      pred('A', 0, [0, 0, 0], 0.9), // confident, right
      pred('B', 1, [2, 2, 2], low), // uncertain, wrong: left out of the confident accuracy
      pred('C', 3, [3, 3], 0.95), // confident, right
      pred('D', 2, [1, 1], 0.85), // confident, wrong
    ]);
    expect(m.outcomes.map((o) => o.uncertain)).toEqual([false, true, false, false]);
    expect(m.outcomes[1]!.confidence).toBeCloseTo(low, 6);
    expect(m.confident).toEqual({ threshold: UNCERTAIN_CONFIDENCE, tickers: 3, correct: 2, accuracy: 2 / 3, uncertain: ['B'] });
    expect(formatConfident(m.confident, m.tickers)).toBe(
      `confident: 3 of 4 tickers, accuracy 66.7 %; uncertain: 1 (B) (confidence below ${UNCERTAIN_CONFIDENCE})`,
    );
    const none = summarisePredictions([pred('B', 1, [2], low)]).confident;
    expect(none).toMatchObject({ tickers: 0, correct: 0, accuracy: null, uncertain: ['B'] });
  });

  it('breaks majority ties by probability mass, then by lower index', () => {
    const p = pred('T', 0, [1, 2]);
    p.probs[1 * 4 + 2] = 0.9;
    expect(majorityDomain(p.assign, p.probs)).toBe(2);
    const q = pred('T', 0, [3, 1]);
    expect(majorityDomain(q.assign, q.probs)).toBe(1);
  });

  it('parses labels with quoted notes and rejects unknown classes', () => {
    const labels = parseLabels('ticker,class,note\nAAPL,Equities,\nTMF,Derivatives,"3x, rates"\n\ntlt,Fixed Income,x\n', 'labels.csv');
    expect([...labels]).toEqual([
      ['AAPL', 0],
      ['TMF', 3],
      ['TLT', 1],
    ]);
    expect(() => parseLabels('ticker,class\nX,Bonds\n', 'l.csv')).toThrow(/one of Equities, Fixed Income, Commodities, Derivatives on line 2 of l\.csv/);
    expect(() => parseLabels('symbol,kind\n', 'l.csv')).toThrow(EvaluationError);
  });

  it('reads the usual spellings of the four classes, and nothing else', () => {
    const labels = parseLabels('ticker,class\nA,equity\nB,FIXED_INCOME\nC,fixed-income\nD, Commodity \nE,derivative\nF,FixedIncome\n', 'l.csv');
    expect([...labels]).toEqual([
      ['A', 0],
      ['B', 1],
      ['C', 1],
      ['D', 2],
      ['E', 3],
      ['F', 1],
    ]);
    for (const bad of ['Fixed', 'Income', 'Equitie', 'FX', '']) {
      expect(() => parseLabels(`ticker,class\nX,${bad}\n`, 'l.csv'), bad).toThrow(/on line 2 of l\.csv/);
    }
  });

  it('gives the ECE a perfectly calibrated router would show on the same tokens', () => {
    // Certain tokens are right every draw: no noise at all.
    expect(calibrationNoise([pred('A', 0, [0, 0, 0], 1)])).toEqual({ median: 0, p90: 0 });
    expect(calibrationNoise([])).toEqual({ median: 0, p90: 0 });
    // At confidence 0.7 the ECE of n tokens is |k/n − 0.7| with k ~ Binomial(n, 0.7): mean ≈ 0.8·√(0.21/n).
    const few = calibrationNoise([pred('A', 0, Array(100).fill(0), 0.7)], 400);
    const many = calibrationNoise([pred('A', 0, Array(10_000).fill(0), 0.7)], 400);
    expect(few.median).toBeGreaterThan(0.015);
    expect(few.median).toBeLessThan(0.05);
    expect(few.p90).toBeGreaterThan(few.median);
    expect(many.p90).toBeLessThan(0.01);
    // Seeded: the same tokens give the same figures; the labels and routes do not enter.
    expect(calibrationNoise([pred('B', 2, Array(100).fill(1), 0.7)], 400)).toEqual(few);
  });
});

describe.skipIf(!haveMarketData)('evaluation on real market data (../shared/market-data)', () => {
  let dir: string;
  let modelPath: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'moe-eval-'));
    // The shipped model when present and trained on this feature spec; otherwise a freshly initialised one, which
    // still exercises the whole path.
    modelPath = DEFAULT_MODEL_PATH;
    const usable = existsSync(modelPath) && (await loadModel(modelPath).then(() => true, () => false));
    if (!usable) {
      modelPath = path.join(dir, 'init.safetensors');
      await saveModel(modelPath, { hidden: 16, params: initParams(16, 1), temperature: 1 });
    }
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('returns a well-formed result whose accuracies match the per-ticker predictions', async () => {
    const labelsFile = path.join(dir, 'labels.csv');
    await writeFile(labelsFile, 'ticker,class\nAAPL,Equities\nTLT,Fixed Income\nGLD,Commodities\nUVXY,Derivatives\n');
    const r = await evaluateDirectory({ dataDir: marketData, labelsFile, modelPath, tickers: ['AAPL', 'TLT', 'GLD', 'UVXY', 'SPY', 'NOPE'] });
    expect(r.tickers).toBe(4);
    expect(r.skipped).toEqual(['SPY']);
    expect(r.failed).toEqual([{ ticker: 'NOPE', reason: `no NOPE.csv in ${marketData}` }]);
    expect(r.predictions.map((p) => p.ticker)).toEqual(['AAPL', 'GLD', 'TLT', 'UVXY']);
    let dayCorrect = 0;
    let days = 0;
    let tickerCorrect = 0;
    for (const p of r.predictions) {
      expect(p.assign.length).toBeGreaterThan(500);
      expect(p.probs.length).toBe(p.assign.length * 4);
      const counts = [0, 0, 0, 0];
      for (let n = 0; n < p.assign.length; n++) {
        const row = Array.from(p.probs.subarray(n * 4, n * 4 + 4));
        expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
        expect(p.assign[n]).toBe(row.indexOf(Math.max(...row)));
        counts[p.assign[n]!]! += 1;
        if (p.assign[n] === p.label) dayCorrect += 1;
      }
      days += p.assign.length;
      const top = Math.max(...counts);
      // With no tie the majority is unambiguous; ties are covered by the unit test above.
      if (counts.filter((c) => c === top).length === 1 && counts.indexOf(top) === p.label) tickerCorrect += 1;
    }
    expect(r.days).toBe(days);
    expect(r.perDay.accuracy).toBeCloseTo(dayCorrect / days, 12);
    expect(r.perTicker.accuracy).toBeCloseTo(tickerCorrect / 4, 12);
    expect(r.confusion.flat().reduce((a, b) => a + b, 0)).toBe(4);
    for (const name of DOMAINS) expect(r.perTicker.byClass[name].total).toBe(1);
    expect(r.meanConfidence).toBeGreaterThan(0.25);
    expect(r.meanConfidence).toBeLessThanOrEqual(1);
  });

  it('routes with only the context series asked for (--context-series), the others read as missing', async () => {
    const tsx = path.join(repoRoot, 'node_modules', '.bin', 'tsx');
    const cli = path.join(repoRoot, 'src', 'cli', 'evaluate.ts');
    const args = [cli, '--data', marketData, '--model', modelPath, '--tickers', 'AAPL,TLT', '--days', '30'];
    const parse = (stdout: string) => JSON.parse(stdout.trim().split('\n').at(-1)!) as { context: { from: Record<string, string>; missing: { ticker: string; reason: string }[] } };
    const two = await run(tsx, [...args, '--context-series', 'equity,rates', '--json'], { cwd: repoRoot });
    expect(Object.keys(parse(two.stdout).context.from).sort()).toEqual(['IEF', 'SPY']);
    expect(parse(two.stdout).context.missing).toEqual(['GLD', 'DBC', 'UUP'].map((ticker) => ({ ticker, reason: 'left out' })));
    expect(two.stdout).toMatch(/context: .*; missing GLD DBC UUP/);
    const none = await run(tsx, [...args, '--context-series', 'none', '--json'], { cwd: repoRoot });
    expect(parse(none.stdout).context.from).toEqual({});
    // The same days routed; each token's shortfall, read by the context temperature, is that of the series kept.
    const all = await evaluateDirectory({ dataDir: marketData, modelPath, tickers: ['AAPL', 'TLT'], days: 30 });
    const part = await evaluateDirectory({ dataDir: marketData, modelPath, tickers: ['AAPL', 'TLT'], days: 30, keepContext: ['equity', 'rates'] });
    const without = await evaluateDirectory({ dataDir: marketData, modelPath, tickers: ['AAPL', 'TLT'], days: 30, keepContext: [] });
    for (const [r, c] of [[all, 0], [part, 0.6], [without, 1]] as const) {
      expect(r.days).toBe(60);
      for (const p of r.predictions) for (const v of p.shortfall!) expect(v).toBeCloseTo(c, 2);
    }
    for (const [bad, why] of [['gold,silver', 'unknown "silver"'], ['equity,equity', 'a name twice'], ['', 'unknown ""']] as const) {
      const e = await run(tsx, [...args, '--context-series', bad], { cwd: repoRoot }).catch((x: { code: number; stderr: string }) => x);
      expect((e as { code: number }).code).toBe(2);
      expect((e as { stderr: string }).stderr).toContain(`Expected none or comma-separated names among equity, rates, gold, commodity, dollar for --context-series but received ${JSON.stringify(bad)} (${why})`);
    }
  });

  it('CLI prints a JSON summary on its last line and exits 2 on bad usage', async () => {
    const tsx = path.join(repoRoot, 'node_modules', '.bin', 'tsx');
    const cli = path.join(repoRoot, 'src', 'cli', 'evaluate.ts');
    const ok = await run(tsx, [cli, '--data', marketData, '--model', modelPath, '--tickers', 'AAPL,TLT', '--json'], { cwd: repoRoot });
    const last = ok.stdout.trim().split('\n').at(-1)!;
    const json = JSON.parse(last) as {
      tickers: number;
      perTicker: { accuracy: number; byClass: object };
      perDay: { accuracy: number };
      confusion: number[][];
      confident: { threshold: number; tickers: number; correct: number; uncertain: string[] };
      predictions: { ticker: string; confidence: number; uncertain: boolean }[];
    };
    expect(json.tickers).toBe(2);
    expect(json.confident.threshold).toBe(UNCERTAIN_CONFIDENCE);
    expect(json.confident.tickers + json.confident.uncertain.length).toBe(2);
    for (const p of json.predictions) expect(p.uncertain).toBe(p.confidence < UNCERTAIN_CONFIDENCE);
    expect(ok.stdout).toMatch(new RegExp(`confident: ${json.confident.tickers} of 2 tickers, accuracy [\\d.]+ %; uncertain: ${json.confident.uncertain.length}`));
    expect(json.confusion).toHaveLength(4);
    expect(typeof json.perDay.accuracy).toBe('number');
    expect(Object.keys(json.perTicker.byClass)).toEqual([...DOMAINS]);
    expect(ok.stdout).toMatch(/tickers used 2, skipped without label 0/);

    const bad = await run(tsx, [cli, '--data', path.join(dir, 'missing')], { cwd: repoRoot }).catch((e: { code: number; stderr: string }) => e);
    expect((bad as { code: number }).code).toBe(2);
    expect((bad as { stderr: string }).stderr).toMatch(/Expected a folder of <TICKER>\.csv for --data/);
    const none = await run(tsx, [cli], { cwd: repoRoot }).catch((e: { code: number; stderr: string }) => e);
    expect((none as { code: number }).code).toBe(2);
  });
});

describe('metrics per calendar year', () => {
  it('splits each ticker at year ends and judges every year on its own days', () => {
    const d = (iso: string): number => isoToDays(iso);
    const a = { ...pred('A', 0, [1, 1, 0, 0, 0]), dates: Int32Array.from(['2020-12-30', '2020-12-31', '2021-01-04', '2021-01-05', '2021-01-06'].map(d)) };
    const b = { ...pred('B', 2, [2, 3]), dates: Int32Array.from(['2021-06-01', '2022-01-03'].map(d)) };
    const years = metricsByYear([a, b, pred('C', 1, [1])]); // C has no dates: left out
    expect(yearOfDays(d('2021-01-01'))).toBe(2021);
    expect(years.map((y) => y.year)).toEqual([2020, 2021, 2022]);
    expect(years.map((y) => [y.tickers, y.days])).toEqual([
      [1, 2],
      [2, 4],
      [1, 1],
    ]);
    expect(years[0]!.perTicker.accuracy).toBe(0); // A routed to Fixed Income on both of its 2020 days
    expect(years[1]!.perTicker.accuracy).toBe(1); // A right on its three 2021 days, B on its one
    expect(years[1]!.perDay.accuracy).toBe(1);
    expect(years[2]!.perDay.accuracy).toBe(0);
    expect(years[1]!.ece).toBeCloseTo(0.3, 6);
    // Each year names its misrouted tickers.
    expect(years.map((y) => y.wrong)).toEqual([['A: Equities → Fixed Income'], [], ['B: Commodities → Derivatives']]);
  });
});

describe('evaluation of short histories (--max-bars, --last-bars, --by-year)', () => {
  let dir: string;
  let modelPath: string;
  const N = 400;
  const END = '2021-06-30';
  const specs = [
    ['AEQ', { class: 'Equities', subtype: 'stock' }],
    ['BFI', { class: 'Fixed Income', subtype: 'treasury-long' }],
    ['CCO', { class: 'Commodities', subtype: 'energy' }],
    ['DDE', { class: 'Derivatives', subtype: 'leveraged-3x' }],
  ] as const;
  const bars = new Map<string, Bar[]>(specs.map(([t, spec], i) => [t, simulateBars(t, spec, N, 50 + i, END)]));
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'moe-eval-short-'));
    for (const [t, bs] of bars) {
      const lines = bs.map((b) => [b.date, b.open, b.high, b.low, b.close, b.adjClose, b.volume ?? ''].join(','));
      await writeFile(path.join(dir, `${t}.csv`), `date,open,high,low,close,adj_close,volume\n${lines.join('\n')}\n`);
    }
    await writeFile(path.join(dir, 'labels.csv'), `ticker,class\n${specs.map(([t, s]) => `${t},${s.class}`).join('\n')}\n`);
    modelPath = path.join(dir, 'init.safetensors');
    await saveModel(modelPath, { hidden: 16, params: initParams(16, 3), temperature: 1 });
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('routes each ticker from its first N bars, its last N bars, or all of them', async () => {
    const first60 = await evaluateDirectory({ dataDir: dir, modelPath, maxBars: 60 });
    expect(first60.tickers).toBe(4);
    expect(first60.days).toBe(4); // one token each: bar 60
    expect(first60.bars).toEqual({ slice: 'first', count: 60, minBars: 60 });
    for (const p of first60.predictions) expect(Array.from(p.dates!)).toEqual([isoToDays(bars.get(p.ticker)![59]!.date)]);

    const first120 = await evaluateDirectory({ dataDir: dir, modelPath, maxBars: 120, byYear: true });
    expect(first120.days).toBe(4 * 61);
    for (const p of first120.predictions) {
      const bs = bars.get(p.ticker)!;
      expect(p.dates![0]).toBe(isoToDays(bs[59]!.date));
      expect(p.dates!.at(-1)).toBe(isoToDays(bs[119]!.date));
    }
    const years = first120.byYear!;
    expect(years.reduce((a, y) => a + y.days, 0)).toBe(first120.days);
    expect(years.map((y) => y.year)).toEqual([...new Set(first120.predictions.flatMap((p) => Array.from(p.dates!, yearOfDays)))].sort());

    const last120 = await evaluateDirectory({ dataDir: dir, modelPath, lastBars: 120, days: 10 });
    expect(last120.days).toBe(4 * 10);
    expect(last120.bars.slice).toBe('last');
    for (const p of last120.predictions) expect(p.dates!.at(-1)).toBe(isoToDays(bars.get(p.ticker)!.at(-1)!.date));

    const all = await evaluateDirectory({ dataDir: dir, modelPath });
    expect(all.days).toBe(4 * (N - 59));
    expect(all.bars).toEqual({ slice: 'all', count: null, minBars: 60 });
    // The last tokens of a full file are those of its last 251 bars: the first year serves as warm-up only.
    const tail = await evaluateDirectory({ dataDir: dir, modelPath, lastBars: 251 + 20, days: 20 });
    const fromAll = await evaluateDirectory({ dataDir: dir, modelPath, days: 20 });
    for (let i = 0; i < 4; i++) {
      expect(Array.from(tail.predictions[i]!.dates!)).toEqual(Array.from(fromAll.predictions[i]!.dates!));
      expect(Array.from(tail.predictions[i]!.assign)).toEqual(Array.from(fromAll.predictions[i]!.assign));
    }

    const text = formatEvaluation(first120);
    expect(text).toMatch(/bars: each ticker's first 120 bars \(a new listing\)/);
    expect(text).toMatch(/by calendar year of the token dates/);
    const json = evaluationJson(first120) as { bars: unknown; byYear: { year: number; perTicker: { accuracy: number }; perDay: { accuracy: number }; ece: number }[] };
    expect(json.bars).toEqual({ slice: 'first', count: 120, minBars: 60 });
    expect(json.byYear.map((y) => y.year)).toEqual(years.map((y) => y.year));
    expect(typeof json.byYear[0]!.ece).toBe('number');
    await expect(evaluateDirectory({ dataDir: dir, modelPath, maxBars: 59 })).rejects.toThrow(/^Expected integer ≥ 60 \(the minimum history\) for maxBars but received 59$/);
    await expect(evaluateDirectory({ dataDir: dir, modelPath, maxBars: 60, lastBars: 60 })).rejects.toThrow(/either maxBars or lastBars/);
  });

  it('routes every stretch of N bars as its own listing (--window-bars)', async () => {
    const windows = await evaluateDirectory({ dataDir: dir, modelPath, windowBars: 60 });
    // Stretches start at 340, 320, …, 0: the last ends at the last bar, one every 20 bars.
    const starts = Array.from({ length: 18 }, (_, i) => 340 - 20 * (17 - i));
    expect(windows.days).toBe(4 * starts.length);
    expect(windows.bars).toEqual({ slice: 'windows', count: 60, minBars: 60, step: 20 });
    const first60 = await evaluateDirectory({ dataDir: dir, modelPath, maxBars: 60 });
    const last60 = await evaluateDirectory({ dataDir: dir, modelPath, lastBars: 60 });
    for (const [i, p] of windows.predictions.entries()) {
      const bs = bars.get(p.ticker)!;
      expect(Array.from(p.dates!)).toEqual(starts.map((s) => isoToDays(bs[s + 59]!.date)));
      // Each stretch is a listing of 60 bars: its first and last are the --max-bars 60 and --last-bars 60 tokens.
      expect(Array.from(p.probs.slice(0, 4))).toEqual(Array.from(first60.predictions[i]!.probs));
      expect(Array.from(p.probs.slice(-4))).toEqual(Array.from(last60.predictions[i]!.probs));
      expect(Array.from(p.shortness!)).toEqual(starts.map(() => first60.predictions[i]!.shortness![0]!));
    }
    // A file shorter than the stretch routes nothing and is reported, the others still route.
    const long = await evaluateDirectory({ dataDir: dir, modelPath, windowBars: 400 });
    expect(long.days).toBe(4);
    await expect(evaluateDirectory({ dataDir: dir, modelPath, windowBars: 401 })).rejects.toThrow(/NO_DATA|at least one labelled ticker/);
    const sparse = await evaluateDirectory({ dataDir: dir, modelPath, windowBars: 120, windowStep: 100 });
    expect(sparse.days).toBe(4 * 3); // starts 280, 180, 80
    expect(formatEvaluation(sparse)).toMatch(/bars: one token per stretch of 120 bars of each ticker \(as a listing that old\), a stretch every 100 bars/);
    await expect(evaluateDirectory({ dataDir: dir, modelPath, windowBars: 59 })).rejects.toThrow(/^Expected integer ≥ 60 \(the minimum history\) for windowBars but received 59$/);
    await expect(evaluateDirectory({ dataDir: dir, modelPath, windowBars: 60, days: 5 })).rejects.toThrow(/windowBars without maxBars, lastBars or days/);
    await expect(evaluateDirectory({ dataDir: dir, modelPath, windowBars: 60, windowStep: 0 })).rejects.toThrow(/^Expected integer ≥ 1 for windowStep but received 0$/);
  });

  it('CLI takes --max-bars / --last-bars / --by-year and refuses a slice under the minimum history', async () => {
    const tsx = path.join(repoRoot, 'node_modules', '.bin', 'tsx');
    const cli = path.join(repoRoot, 'src', 'cli', 'evaluate.ts');
    const ok = await run(tsx, [cli, '--data', dir, '--model', modelPath, '--last-bars', '120', '--by-year', '--json'], { cwd: repoRoot });
    const json = JSON.parse(ok.stdout.trim().split('\n').at(-1)!) as { days: number; bars: unknown; byYear: { year: number; days: number }[] };
    expect(json.days).toBe(4 * 61);
    expect(json.bars).toEqual({ slice: 'last', count: 120, minBars: 60 });
    expect(json.byYear.reduce((a, y) => a + y.days, 0)).toBe(4 * 61);
    expect(ok.stdout).toMatch(/by calendar year/);
    const refusals: [string[], RegExp][] = [
      [['--max-bars', '59'], /Expected integer in 60\.\.\d+ for --max-bars but received "59"/],
      [['--max-bars', '60', '--last-bars', '60'], /Expected one of --max-bars, --last-bars and --window-bars but received --max-bars and --last-bars/],
      [['--window-bars', '60', '--days', '5'], /Expected --window-bars without --days but received both/],
      [['--window-step', '5'], /Expected --window-bars N with --window-step but received none/],
    ];
    for (const [args, message] of refusals) {
      const bad = await run(tsx, [cli, '--data', dir, '--model', modelPath, ...args], { cwd: repoRoot }).catch((e: { code: number; stderr: string }) => e);
      expect((bad as { code: number }).code).toBe(2);
      expect((bad as { stderr: string }).stderr).toMatch(message);
    }
    const windows = await run(tsx, [cli, '--data', dir, '--model', modelPath, '--window-bars', '60', '--window-step', '50', '--json'], { cwd: repoRoot });
    const wj = JSON.parse(windows.stdout.trim().split('\n').at(-1)!) as { days: number; bars: unknown };
    expect(wj.bars).toEqual({ slice: 'windows', count: 60, minBars: 60, step: 50 });
    expect(wj.days).toBe(4 * 7); // starts 340, 290, …, 40
    expect(windows.stdout).toMatch(/ECE \d\.\d{3} \(a perfectly calibrated router on these 28 tokens: \d\.\d{3}, 90th percentile \d\.\d{3}\)/);
    expect(Object.keys((wj as unknown as { eceNoise: object }).eceNoise)).toEqual(['median', 'p90']);
  });
});

if (!haveMarketData) {
  describe('evaluation on real market data', () => {
    it.skip(`skipped: ${marketData} is absent`, () => {});
  });
}
