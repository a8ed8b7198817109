import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { calibrateOnLabelled, noiseAll } from '../src/training/calibrate.js';
import { calibrationNoise, type TickerPrediction } from '../src/training/evaluate.js';
import { Rng } from '../src/util/random.js';
import { closeTrainingWorkPools } from '../src/training/work-pool.js';
import { DEFAULT_MODEL_PATH, loadModel } from '../src/router/model.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const marketData = path.resolve(repoRoot, '../shared/market-data');
const haveMarketData = existsSync(path.join(marketData, 'labels.csv'));
if (!haveMarketData) console.warn(`skipping the calibration tests: ${marketData} (labels.csv and the csv files) is absent`);

// The context set and a few tickers of every class: enough days for 5 folds, small enough for a test.
const TICKERS = ['SPY', 'IEF', 'GLD', 'DBC', 'UUP', 'AAPL', 'TLT', 'USO', 'VXX', 'SQQQ'];

describe.skipIf(!haveMarketData)('calibration on real labelled data', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'moe-cal-'));
    const labels = (await readFile(path.join(marketData, 'labels.csv'), 'utf8')).split('\n');
    await writeFile(path.join(dir, 'labels.csv'), [labels[0], ...labels.filter((l) => TICKERS.includes(l.split(',')[0]!))].join('\n') + '\n');
    for (const t of TICKERS) await copyFile(path.join(marketData, `${t}.csv`), path.join(dir, `${t}.csv`));
  });
  afterAll(async () => {
    await closeTrainingWorkPools();
    await rm(dir, { recursive: true, force: true });
  });

  it('fits the same temperatures on worker threads as here, and cross-fits them by ticker fold', async () => {
    const model = await loadModel(DEFAULT_MODEL_PATH);
    const here = await calibrateOnLabelled(model, { dataDir: dir, folds: 5 });
    const threaded = await calibrateOnLabelled(model, { dataDir: dir, folds: 5, threads: 2 });
    expect(here.tickers).toBe(TICKERS.length);
    expect(here.days).toBeGreaterThan(10_000);
    for (const k of ['temperature', 'historyTemperature', 'foldTemperatures', 'foldHistoryTemperatures', 'contextTemperature', 'foldContextTemperatures', 'days'] as const) expect(threaded[k]).toEqual(here[k]);
    expect(threaded.crossFitted.ece).toBe(here.crossFitted.ece);
    // The fitted values are inside the search range and the grid; cross-fitting scores each fold with another fit.
    expect(here.temperature).toBeGreaterThan(0.05);
    expect(here.temperature).toBeLessThan(20);
    for (const k of [here.historyTemperature, ...here.foldHistoryTemperatures]) expect(Math.round(k * 10) / 10).toBeCloseTo(k, 12);
    expect(new Set(here.foldTemperatures).size).toBeGreaterThan(1);
  }, 120_000);
});

describe('calibration noise on worker threads', () => {
  afterAll(closeTrainingWorkPools);

  it('is the same numbers as in place, set by set', async () => {
    const rng = new Rng(3);
    const set = (tickers: number, days: number): TickerPrediction[] =>
      Array.from({ length: tickers }, (_, t) => {
        const probs = new Float32Array(days * 4).map(() => rng.next());
        for (let i = 0; i < days; i++) {
          const sum = probs[4 * i]! + probs[4 * i + 1]! + probs[4 * i + 2]! + probs[4 * i + 3]!;
          for (let d = 0; d < 4; d++) probs[4 * i + d]! /= sum;
        }
        return { ticker: `T${t}`, label: t % 4, assign: new Uint8Array(days).map((_, i) => i % 4), probs };
      });
    const sets = [set(3, 50), set(5, 400), [], set(1, 1)];
    const threaded = await noiseAll(sets, 2);
    expect(threaded).toEqual(sets.map((s) => calibrationNoise(s)));
    expect(threaded[1]!.median).toBeGreaterThan(0);
    expect(await noiseAll(sets, 1)).toEqual(threaded);
  });
});
