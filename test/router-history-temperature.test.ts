import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { computeFeatures } from '../src/data/features/compute.js';
import { simulateBars, simulateContext } from '../src/data/sim/simulator.js';
import { CONTEXT_SLOT, HISTORY_SLOT, temperBatchByHistory, temperByHistory, tokenShortfall, tokenShortness } from '../src/router/history-temperature.js';
import { NO_CONTEXT } from '../src/data/features/context.js';
import { atCalibration, fitAll } from '../src/training/calibrate.js';
import { summarisePredictions, type TickerPrediction } from '../src/training/evaluate.js';
import { Rng } from '../src/util/random.js';
import { initParams, loadModel, saveModel } from '../src/router/model.js';
import { referenceForward } from '../src/router/reference.js';
import { calibrateOnLabelled } from '../src/training/calibrate.js';
import { evaluateDirectory } from '../src/training/evaluate.js';

/**
 * The history temperature: a token's shortness is 0 from a year of history, 1 at 60 bars; re-tempering equals the
 * router's math at T·(1 + κ·u), keeps every routing decision and leaves full-history tokens untouched; the model file
 * carries κ; and on the real development folder it lowers the calibration error of new listings.
 */

const DAYS = 400;
const context = simulateContext(3, DAYS);
const series = computeFeatures('TLT', simulateBars('TLT', { class: 'Fixed Income', subtype: 'treasury-long' }, DAYS, 3), 16, context);
const DATA = path.resolve('../shared/market-data');

describe('history temperature', () => {
  it('reads shortness from history_250: 1 at 60 bars, about 0.5 at 120, 0 from 251 bars on', () => {
    expect(HISTORY_SLOT).toBe(8);
    const u = tokenShortness(series.x, 16);
    expect(u.length).toBe(series.vol.length);
    // Token i is bar 59 + i: it holds 59 + i returns.
    expect(u[0]).toBeCloseTo(1, 5);
    expect(u[60]).toBeCloseTo(Math.log(119 / 250) / Math.log(59 / 250), 5);
    expect(u[191]).toBe(0);
    expect(u[DAYS - 60]).toBe(0);
  });

  it('equals the router at T·(1 + κ·u), keeps the argmax and leaves full histories bit for bit', () => {
    const params = initParams(16, 11);
    const T = 0.7;
    const kappa = 1.3;
    const n = series.vol.length;
    const at = referenceForward(params, 16, series, T);
    const probs = Float32Array.from(at.probs);
    const before = probs.slice();
    const u = tokenShortness(series.x, 16);
    temperByHistory(probs, u, kappa);
    for (const i of [0, 30, 60, 150, 191, n - 1]) {
      const one = { x: series.x.subarray(i * 16, (i + 1) * 16), vol: series.vol.subarray(i, i + 1), risk: series.risk.subarray(i, i + 1) };
      const want = referenceForward(params, 16, one, T * (1 + kappa * u[i]!)).probs;
      for (let d = 0; d < 4; d++) expect(probs[i * 4 + d]!, `token ${i}`).toBeCloseTo(want[d]!, 5);
      const arg = (p: ArrayLike<number>) => [0, 1, 2, 3].reduce((b, d) => (p[i * 4 + d]! > p[i * 4 + b]! ? d : b), 0);
      expect(arg(probs)).toBe(arg(before));
    }
    expect(probs.subarray(191 * 4)).toEqual(before.subarray(191 * 4));
    expect(temperByHistory(before.slice(), u, 0)).toEqual(before);
  });

  it('reads the context shortfall from ctx_coverage_250: 0 with every context series, 1 with none, 0.6 with two of five', () => {
    expect(CONTEXT_SLOT).toBe(9);
    const full = tokenShortfall(series.x, 16);
    expect(Math.max(...full)).toBeLessThan(0.01);
    const none = computeFeatures('TLT', simulateBars('TLT', { class: 'Fixed Income', subtype: 'treasury-long' }, DAYS, 3), 16, NO_CONTEXT);
    expect(Array.from(new Set(tokenShortfall(none.x, 16)))).toEqual([1]);
    const two = computeFeatures('TLT', simulateBars('TLT', { class: 'Fixed Income', subtype: 'treasury-long' }, DAYS, 3), 16, context.map((c, i) => (i < 2 ? c : null)));
    for (const c of tokenShortfall(two.x, 16)) expect(c).toBeCloseTo(0.6, 2);
    // The batch form re-tempers by both scalars: a token with no context at λ = 1 is read at twice the temperature.
    const params = initParams(16, 11);
    const at = Float32Array.from(referenceForward(params, 16, none, 0.7).probs);
    const want = referenceForward(params, 16, none, 1.4).probs;
    temperBatchByHistory(at, none.x, 16, { historyTemperature: 0, contextTemperature: 1 });
    for (let i = 0; i < 40; i++) expect(at[i]!).toBeCloseTo(want[i]!, 5);
  });

  it('fits λ on the routes short of context only, leaving T and κ as fitted without them', async () => {
    // Calibrated routes with their context, and over-confident ones without (right 55 % of the time at 0.9).
    const rng = new Rng(5);
    const preds = (n: number, shortfall: number, right: (top: number) => number): TickerPrediction[] =>
      Array.from({ length: 8 }, (_, t) => {
        const probs = new Float32Array(n * 4);
        const assign = new Uint8Array(n);
        for (let i = 0; i < n; i++) {
          const top = rng.uniform(0.4, 0.98);
          const d = rng.int(4);
          for (let k = 0; k < 4; k++) probs[i * 4 + k] = k === d ? top : (1 - top) / 3;
          assign[i] = d;
        }
        // One label per ticker: its tokens are right where the draw says so, else routed elsewhere.
        const label = t % 4;
        for (let i = 0; i < n; i++) {
          const top = probs[i * 4 + assign[i]!]!;
          const ok = rng.next() < right(top);
          const other = (label + 1 + rng.int(3)) % 4;
          const d = ok ? label : other;
          for (let k = 0; k < 4; k++) probs[i * 4 + k] = k === d ? top : (1 - top) / 3;
          assign[i] = d;
        }
        return { ticker: `T${t}`, label, assign, probs, shortness: new Float32Array(n), shortfall: new Float32Array(n).fill(shortfall) };
      });
    const withContext = preds(500, 0, (top) => top);
    const without = preds(500, 1, (top) => 0.25 + 0.3 * top);
    const [both, only] = await fitAll([[...withContext, ...without], withContext], 1);
    expect([both!.temperature, both!.kappa]).toEqual([only!.temperature, only!.kappa]);
    expect(only!.temperature).toBeGreaterThan(0.9);
    expect(only!.temperature).toBeLessThan(1.1);
    expect(only!.lambda).toBe(0);
    expect(both!.lambda).toBeGreaterThan(0.5);
    const ece = (c: { temperature: number; kappa: number; lambda: number }) => summarisePredictions(without.map((p) => atCalibration(p, c))).ece;
    expect(ece(both!)).toBeLessThan(ece({ ...both!, lambda: 0 }) / 2);
  });

  it('is stored in the model file, 0 when absent, and refused outside [0, 10]', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'moe-hist-'));
    try {
      const params = initParams(16, 1);
      await saveModel(path.join(dir, 'a.safetensors'), { hidden: 16, params, temperature: 0.8, historyTemperature: 0.7, contextTemperature: 1.25 });
      await saveModel(path.join(dir, 'b.safetensors'), { hidden: 16, params, temperature: 0.8 });
      expect((await loadModel(path.join(dir, 'a.safetensors'))).historyTemperature).toBeCloseTo(0.7, 6);
      expect((await loadModel(path.join(dir, 'b.safetensors'))).historyTemperature).toBe(0);
      expect((await loadModel(path.join(dir, 'a.safetensors'))).contextTemperature).toBe(1.25);
      expect((await loadModel(path.join(dir, 'b.safetensors'))).contextTemperature).toBe(0);
      await expect(saveModel(path.join(dir, 'd.safetensors'), { hidden: 16, params, temperature: 0.8, contextTemperature: 11 })).rejects.toThrow(
        /Expected number in \[0, 10\] for contextTemperature but received 11/,
      );
      await expect(saveModel(path.join(dir, 'c.safetensors'), { hidden: 16, params, temperature: 0.8, historyTemperature: -1 })).rejects.toThrow(
        /Expected number in \[0, 10\] for historyTemperature but received -1/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!existsSync(DATA))('lowers the calibration error and the likelihood loss of short histories on the development folder, routing unchanged', async () => {
    // One router of the shipped model (its first member) with the T and κ the calibration fits for it alone (in-sample:
    // the development folder trained it).
    const model = await loadModel();
    const cal = await calibrateOnLabelled({ hidden: model.hidden, params: model.params, temperature: 1 }, { dataDir: DATA, threads: 2 });
    expect(cal.historyTemperature, 'the calibration fits a history temperature for one router').toBeGreaterThan(0);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'moe-hist-'));
    try {
      const withFile = path.join(dir, 'with.safetensors');
      const flat = path.join(dir, 'flat.safetensors');
      await saveModel(withFile, { hidden: model.hidden, params: model.params, temperature: cal.temperature, historyTemperature: cal.historyTemperature });
      await saveModel(flat, { hidden: model.hidden, params: model.params, temperature: cal.temperature });
      // A listing's first 60 bars (one token per ticker): the likelihood. Its ECE rests on 97 tokens, where chance alone
      // gives a calibrated router about 0.04 (models/README.md), so the calibration error is judged over every stretch
      // of 60 bars (5,440 tokens, each a 60-bar history).
      const both = async (slice: { maxBars: number } | { windowBars: number }) =>
        [await evaluateDirectory({ dataDir: DATA, ...slice, modelPath: withFile }), await evaluateDirectory({ dataDir: DATA, ...slice, modelPath: flat })] as const;
      const [withK, without] = await both({ maxBars: 60 });
      expect(withK.perDay.correct).toBe(without.perDay.correct);
      expect(withK.nll).toBeLessThan(without.nll);
      expect(withK.meanConfidence).toBeLessThan(without.meanConfidence);
      const [withKs, withoutS] = await both({ windowBars: 60 });
      expect(withKs.perDay.correct).toBe(withoutS.perDay.correct);
      expect(withKs.ece).toBeLessThan(withoutS.ece);
      expect(withKs.nll).toBeLessThan(withoutS.nll);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
if (!existsSync(DATA)) console.warn(`skipping the development-folder check: ${DATA} is absent`);
