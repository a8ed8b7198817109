import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { domainIndex, type Domain } from '../src/domains.js';
import { clearSimulationCache, defaultTrainConfig, simulationCacheStats, type TrainConfig } from '../src/training/train.js';
import { main as trainMain } from '../src/cli/train.js';
import { clearRealTokenCache, joinTokenSets, realFolderCacheStats, realTrainingTokens } from '../src/training/real-tokens.js';
import { isShared } from '../src/util/shared-memory.js';
import { crossFit, formatCrossFit } from '../src/training/crossfit.js';
import { fitAll } from '../src/training/calibrate.js';
import { calibrationNoise } from '../src/training/evaluate.js';
import { FEATURE_TABLE } from '../src/data/features/table.js';
import { simulatedTokens, tokenChunks } from '../src/training/tokens.js';
import { closeTrainingWorkPools } from '../src/training/work-pool.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const marketData = path.resolve(repoRoot, '../shared/market-data');
const haveMarketData = existsSync(path.join(marketData, 'labels.csv'));
if (!haveMarketData) console.warn(`skipping the real-data training tests: ${marketData} (labels.csv and the csv files) is absent`);

// The context set and one or two tickers of every class.
const TICKERS = ['SPY', 'IEF', 'GLD', 'DBC', 'UUP', 'AAPL', 'TLT', 'USO', 'VXX', 'SQQQ'];

/** A recipe small enough for a test: a few steps on two tiny simulated histories. */
function tinyConfig(dataDir: string): TrainConfig {
  const config = defaultTrainConfig({ hidden: 16, seed: 5, steps: 8 });
  config.batchSize = 256;
  config.warmupSteps = 2;
  config.simThreads = 1;
  config.feeder = false;
  config.data = {
    ...config.data,
    trainSeeds: 2,
    tickersPerSubtype: 1,
    days: 300,
    testSeeds: 1,
    validationTickersPerSubtype: 1,
    testTickersPerSubtype: 1,
    real: { dataDir, repeat: 2, listings: 1 },
  };
  return config;
}

describe.skipIf(!haveMarketData)('real labelled data in training', () => {
  let dir: string;
  let labels: Map<string, Domain>;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'moe-real-'));
    const lines = (await readFile(path.join(marketData, 'labels.csv'), 'utf8')).split('\n');
    const kept = lines.filter((l) => TICKERS.includes(l.split(',')[0]!));
    labels = new Map(kept.map((l) => [l.split(',')[0]!, l.split(',')[1] as Domain]));
    await writeFile(path.join(dir, 'labels.csv'), [lines[0], ...kept].join('\n') + '\n');
    for (const t of TICKERS) await copyFile(path.join(marketData, `${t}.csv`), path.join(dir, `${t}.csv`));
  });
  afterAll(async () => {
    await closeTrainingWorkPools();
    await rm(dir, { recursive: true, force: true });
  });

  it('gives each ticker its whole series `repeat` times and `listings` first-bars copies, seeded, without the excluded tickers', async () => {
    const data = { dataDir: dir, repeat: 2, listings: 3 };
    const set = await realTrainingTokens(16, data, 7);
    const again = await realTrainingTokens(16, data, 7);
    expect(Buffer.from(again.x.buffer).equals(Buffer.from(set.x.buffer))).toBe(true);
    // Computed on worker threads instead: the same rows.
    clearRealTokenCache();
    const onThreads = await realTrainingTokens(16, data, 7, undefined, 2);
    expect(Buffer.from(onThreads.x.buffer).equals(Buffer.from(set.x.buffer))).toBe(true);
    expect(onThreads.tickers).toEqual(set.tickers);
    expect(set.tickers).toHaveLength(TICKERS.length * 5);
    for (const t of set.tickers) {
      const base = t.ticker.split(':')[0]!;
      expect(t.label).toBe(domainIndex(labels.get(base)!));
      expect(Array.from(set.labels.subarray(t.start, t.end)).every((l) => l === t.label)).toBe(true);
      if (t.ticker.includes(':first')) {
        // A listing of n bars routes its bars from the 60th on: 1 … 341 tokens.
        const n = Number(t.ticker.split(':first')[1]);
        expect(n).toBeGreaterThanOrEqual(60);
        expect(n).toBeLessThanOrEqual(400);
        expect(t.end - t.start).toBe(n - 59);
      }
    }
    const whole = set.tickers.filter((t) => t.ticker === 'AAPL');
    expect(whole).toHaveLength(2);
    expect(whole[0]!.end - whole[0]!.start).toBeGreaterThan(1000);
    // Another seed draws other listing lengths; the whole series stay.
    const other = await realTrainingTokens(16, data, 8);
    expect(other.tickers.filter((t) => t.ticker.includes(':first')).map((t) => t.ticker)).not.toEqual(set.tickers.filter((t) => t.ticker.includes(':first')).map((t) => t.ticker));
    const without = await realTrainingTokens(16, { ...data, exclude: ['aapl', 'TLT'] }, 7);
    expect(without.tickers.some((t) => t.ticker.startsWith('AAPL') || t.ticker.startsWith('TLT'))).toBe(false);
    expect(without.tickers).toHaveLength((TICKERS.length - 2) * 5);
    // A fold's set is the whole set less the excluded tickers' rows, byte for byte, whether its tickers' rows were
    // computed for it or kept from the call before (a cross-fit asks once per fold and member).
    const kept = set.tickers.filter((t) => !t.ticker.startsWith('AAPL') && !t.ticker.startsWith('TLT'));
    const keptX = Buffer.concat(kept.map((t) => Buffer.from(set.x.buffer, t.start * 16 * 4, (t.end - t.start) * 16 * 4)));
    expect(without.tickers.map((t) => t.ticker)).toEqual(kept.map((t) => t.ticker));
    expect(Buffer.from(without.x.buffer).equals(keptX)).toBe(true);
    clearRealTokenCache();
    const cold = await realTrainingTokens(16, { ...data, exclude: ['aapl', 'TLT'] }, 7);
    expect(Buffer.from(cold.x.buffer).equals(Buffer.from(without.x.buffer))).toBe(true);
    expect(Buffer.from(cold.risk.buffer).equals(Buffer.from(without.risk.buffer))).toBe(true);
    // The folder is read once per set of tickers left out (the order and case of the list aside), and again once a file
    // of it changes.
    clearRealTokenCache();
    const read0 = realFolderCacheStats();
    await realTrainingTokens(16, { ...data, exclude: ['TLT', 'AAPL'] }, 7);
    await realTrainingTokens(16, { ...data, exclude: ['aapl', 'tlt'] }, 8);
    await realTrainingTokens(16, data, 7);
    expect(realFolderCacheStats()).toEqual({ hits: read0.hits + 1, misses: read0.misses + 2 });
    const aapl = path.join(dir, 'AAPL.csv');
    const aaplText = await readFile(aapl, 'utf8');
    await writeFile(aapl, aaplText.split('\n').slice(0, -40).join('\n') + '\n');
    try {
      const shorter = await realTrainingTokens(16, data, 7);
      expect(realFolderCacheStats().misses).toBe(read0.misses + 3);
      const rowsOf = (s: typeof set) => s.tickers.filter((t) => t.ticker === 'AAPL')[0]!;
      expect(rowsOf(shorter).end - rowsOf(shorter).start).toBeLessThan(rowsOf(set).end - rowsOf(set).start);
    } finally {
      await writeFile(aapl, aaplText);
    }
    await expect(realTrainingTokens(16, { ...data, repeat: -1 }, 7)).rejects.toThrow(/real\.repeat/);
    await expect(realTrainingTokens(16, { ...data, contextDropout: 1.5 }, 7)).rejects.toThrow(/real\.contextDropout/);
    // Context dropout: the same rows (listing lengths from their own stream) and labels, some copies with less
    // context than the folder has (its coverage feature below 1), seeded.
    const dropped = await realTrainingTokens(16, { ...data, contextDropout: 0.5 }, 7);
    expect(dropped.tickers.map((t) => [t.ticker, t.start, t.end])).toEqual(set.tickers.map((t) => [t.ticker, t.start, t.end]));
    expect(Array.from(dropped.labels)).toEqual(Array.from(set.labels));
    const coverage = FEATURE_TABLE.findIndex((f) => f.name === 'ctx_coverage_250');
    const lessContext = (s: typeof set) => s.tickers.filter((t) => s.x[(t.end - 1) * 16 + coverage]! < set.x[(t.end - 1) * 16 + coverage]! - 1e-6).length;
    expect(lessContext(set)).toBe(0);
    expect(lessContext(dropped)).toBeGreaterThan(set.tickers.length / 8);
    expect(lessContext(dropped)).toBeLessThan(set.tickers.length * 0.8);
    const droppedAgain = await realTrainingTokens(16, { ...data, contextDropout: 0.5 }, 7);
    expect(Buffer.from(droppedAgain.x.buffer).equals(Buffer.from(dropped.x.buffer))).toBe(true);
    await expect(realTrainingTokens(16, { ...data, exclude: TICKERS }, 7)).rejects.toThrow(/real training data/);
    // Joined after a simulated set, rows and labels keep their place.
    // The series are joined only when read, then into shared memory for the feeder threads; the parts stay as given.
    const joined = joinTokenSets([without, set]);
    expect(joined.parts).toEqual([without, set]);
    expect(joined.size).toBe(without.size + set.size);
    expect(joined.tickers[without.tickers.length]!.start).toBe(without.size);
    expect(Array.from(joined.labels.subarray(without.size))).toEqual(Array.from(set.labels));
    const H = joined.hidden;
    expect(isShared(joined.x) && isShared(joined.vol) && isShared(joined.risk)).toBe(true);
    expect(joined.x).toBe(joined.x);
    expect(Buffer.from(joined.x.buffer, without.size * H * 4).equals(Buffer.from(set.x.buffer, set.x.byteOffset, set.x.byteLength))).toBe(true);
    expect(Array.from(joined.vol.subarray(0, without.size))).toEqual(Array.from(without.vol));
    expect(Array.from(joined.risk.subarray(without.size))).toEqual(Array.from(set.risk));
    // A set of one chunk (here the joined set, once joined) is used as it is.
    expect(joinTokenSets([joined]).x).toBe(joined.x);
    expect(() => joinTokenSets([])).toThrow('Expected at least one token set to join but received none');
    // Each real row's series is a chunk of its set, as cached (no copy), until the set's series are read; a joined
    // set's chunks are its parts' (a device set takes them so), and its join copies from them without joining them.
    const fresh = await realTrainingTokens(16, data, 7);
    const freshAgain = await realTrainingTokens(16, data, 7);
    expect(fresh.chunks).toHaveLength(fresh.tickers.length);
    expect(fresh.chunks![0]!.x).toBe(freshAgain.chunks![0]!.x);
    fresh.tickers.forEach((t, i) => expect(fresh.chunks![i]!.vol.length).toBe(t.end - t.start));
    expect(Array.from(fresh.chunks![3]!.labels)).toEqual(Array.from(fresh.labels.subarray(fresh.tickers[3]!.start, fresh.tickers[3]!.end)));
    const sim = simulatedTokens(16, { seeds: [3, 4], tickersPerSubtype: 1, days: 300 });
    expect(sim.chunks).toHaveLength(2);
    const both = joinTokenSets([sim, fresh]);
    expect(tokenChunks(both)).toHaveLength(2 + fresh.tickers.length);
    expect(Buffer.from(both.x.buffer, sim.size * 16 * 4).equals(Buffer.from(set.x.buffer, set.x.byteOffset, set.x.byteLength))).toBe(true);
    expect(fresh.chunks).toHaveLength(fresh.tickers.length);
    expect(sim.chunks).toHaveLength(2);
    expect(Array.from(both.vol.subarray(0, sim.size))).toEqual(Array.from(sim.vol));
    // Once read, a set is one chunk: its joined series.
    expect(sim.chunks).toEqual([{ x: sim.x, vol: sim.vol, risk: sim.risk, labels: sim.labels }]);
    expect(tokenChunks(both)).toHaveLength(1);
  }, 60_000);

  it('cross-fits: each fold trains without its tickers and scores only them, every slice, calibration out of fold', async () => {
    const config = tinyConfig(dir);
    const realCounts: number[] = [];
    const r = await crossFit({
      config,
      folds: 2,
      slices: [{ name: 'all' }, { name: 'first 120', maxBars: 120 }, { name: 'windows 60', windowBars: 60 }, { name: 'no context', context: [] }, { name: 'SPY+IEF', context: ['equity', 'rates'] }],
      hooks: { log: (m) => { const hit = /\((\d+) of them real\)/.exec(m); if (hit) realCounts.push(Number(hit[1])); } },
    });
    const sorted = [...TICKERS].sort();
    expect(r.foldTickers).toEqual([sorted.filter((_, i) => i % 2 === 0), sorted.filter((_, i) => i % 2 === 1)]);
    // The real tokens each fold trained on are exactly those of the other fold's tickers.
    for (let k = 0; k < 2; k++) {
      const expected = await realTrainingTokens(16, { ...config.data.real!, exclude: r.foldTickers[k]! }, config.seed);
      expect(realCounts[k]).toBe(expected.size);
    }
    expect(realCounts).toHaveLength(2);
    // Every ticker scored once, on every slice.
    expect(r.predictions.map((p) => p.ticker)).toEqual(sorted);
    expect(r.slices.map((s) => s.metrics.tickers)).toEqual(Array(5).fill(TICKERS.length));
    // Without context (or with two of its five series) the same days are routed, from other features; the context's
    // shortfall reads 1 (0.6), 0 with every series.
    for (const [i, c] of [[3, 1], [4, 0.6]] as const) {
      expect(r.slices[i]!.metrics.days).toBe(r.slices[0]!.metrics.days);
      expect(Array.from(r.atT1[i]![0]!.probs.slice(0, 40))).not.toEqual(Array.from(r.atT1[0]![0]!.probs.slice(0, 40)));
      for (const p of r.atT1[i]!) for (const v of p.shortfall!.subarray(-20)) expect(v).toBeCloseTo(c, 2);
    }
    for (const p of r.atT1[0]!) for (const v of p.shortfall!) expect(v).toBeLessThan(0.1);
    expect(r.slices[1]!.metrics.days).toBe(TICKERS.length * 61);
    // Every stretch of 60 bars is one token (a month apart), at the shortness of a 60-bar listing.
    expect(r.slices[2]!.metrics.days).toBeGreaterThan(TICKERS.length * 10);
    for (const p of r.atT1[2]!) for (const u of p.shortness!) expect(u).toBeCloseTo(1, 5);
    // The ECE noise of few tokens is larger than that of many.
    expect(calibrationNoise(r.atT1[2]!).median).toBeLessThan(calibrationNoise(r.atT1[2]!.map((p) => ({ ...p, assign: p.assign.slice(0, 1), probs: p.probs.slice(0, 4) }))).median);
    expect(formatCrossFit(r).join('\n')).toMatch(/windows 60 +per ticker .* ECE \d\.\d{3} \(noise \d\.\d{3}, 90 % ≤ \d\.\d{3}\)/);
    expect(r.byYear.length).toBeGreaterThanOrEqual(5);
    expect(r.temperature).toBeGreaterThan(0.05);
    expect(r.temperature).toBeLessThan(20);
    expect(r.foldCalibration).toHaveLength(2);
    // Fold k's calibration, started as soon as the other fold was in, is the fit on the pooled predictions of every
    // slice without fold k's tickers, and the shipped one the fit on all of them.
    const foldOf = new Map(r.foldTickers.flatMap((ts, k) => ts.map((t) => [t, k] as const)));
    const pooled = r.atT1.flat();
    const refit = await fitAll([...[0, 1].map((k) => pooled.filter((p) => foldOf.get(p.ticker) !== k)), pooled], 1);
    expect(refit).toEqual([...r.foldCalibration, { temperature: r.temperature, kappa: r.historyTemperature, lambda: r.contextTemperature }]);
    // Routes short of context fit the context temperature alone: T and κ are those fitted without them, and λ is 0 then.
    // (Both folds at once here, the slices' features and the fits on worker threads: the same fold routers, so the
    // same predictions, gathered in fold order.)
    const without = await crossFit({ config, folds: 2, concurrency: 2, threads: 2, slices: [{ name: 'all' }, { name: 'first 120', maxBars: 120 }, { name: 'windows 60', windowBars: 60 }] });
    for (let i = 0; i < 3; i++) {
      expect(without.atT1[i]!.map((p) => p.ticker)).toEqual(r.atT1[i]!.map((p) => p.ticker));
      without.atT1[i]!.forEach((p, j) => expect(Buffer.from(p.probs.buffer, p.probs.byteOffset, p.probs.byteLength).equals(Buffer.from(r.atT1[i]![j]!.probs.buffer, r.atT1[i]![j]!.probs.byteOffset, r.atT1[i]![j]!.probs.byteLength))).toBe(true));
    }
    expect([without.temperature, without.historyTemperature, without.contextTemperature]).toEqual([r.temperature, r.historyTemperature, 0]);
    await expect(crossFit({ config, folds: 2, concurrency: 0 })).rejects.toThrow(/Expected integer ≥ 1 for concurrency but received 0/);
    expect(formatCrossFit(r)[0]).toMatch(/λ = \d\.\d\d/);
    expect(formatCrossFit(r).join('\n')).toContain('first 120');
    await expect(crossFit({ config, folds: 1 })).rejects.toThrow(/folds/);
    const { real: _real, ...noReal } = config.data;
    await expect(crossFit({ config: { ...config, data: noReal }, folds: 2 })).rejects.toThrow(/data\.real/);
    // An aborted signal starts no fold.
    const stop = new AbortController();
    stop.abort(new Error('the file failed'));
    await expect(crossFit({ config, folds: 2, signal: stop.signal })).rejects.toThrow('the file failed');
  }, 120_000);

  it('trains the file\'s members at once and the cross-fit beside them when folds train at once: the same file, each set simulated once', async () => {
    const tiny = ['--steps', '4', '--batch', '64', '--tickers-per-subtype', '1', '--train-seeds', '1', '--test-seeds', '1', '--days', '300', '--threads', '1', '--sim-threads', '1'];
    const real = ['--seeds', '3,5', '--real-data', dir, '--real-repeat', '1', '--real-listings', '1', '--real-folds', '2'];
    const run = async (concurrency: number) => {
      const file = path.join(dir, `fold-concurrency-${concurrency}.safetensors`);
      const out: string[] = [];
      const log = vi.spyOn(console, 'log').mockImplementation((m: unknown) => void out.push(String(m)));
      const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
      clearSimulationCache();
      const before = simulationCacheStats();
      try {
        expect(await trainMain([...tiny, ...real, '--fold-concurrency', String(concurrency), '--out', file])).toBe(0);
      } finally {
        log.mockRestore();
        warn.mockRestore();
      }
      const after = simulationCacheStats();
      // The file's names itself in its rebuild command: everything else must match.
      return { bytes: (await readFile(file)).toString('latin1').split(path.basename(file)).join('OUT'), out, misses: after.misses - before.misses };
    };
    const apart = await run(1);
    const beside = await run(2);
    expect(beside.bytes).toBe(apart.bytes);
    // Two members' training histories and the first member's validation and test histories (the ensemble's; the second
    // member trains for its parameters alone), made once whichever router asked first.
    expect([apart.misses, beside.misses]).toEqual([4, 4]);
    expect(apart.out.some((l) => l.startsWith('[file] '))).toBe(false);
    expect(beside.out.some((l) => l.startsWith('[file] [member 2] data: train'))).toBe(true);
    expect(beside.out.some((l) => l.startsWith('[fold 2] data: train'))).toBe(true);
    expect(beside.out.at(-1)).toMatch(/^wrote /);
  }, 120_000);
});
