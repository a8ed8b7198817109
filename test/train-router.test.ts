import { describe, expect, it } from 'vitest';
import { Rng } from '../src/util/random.js';
import { REGIME_FAMILIES } from '../src/data/sim/regimes.js';
import { SUBTYPES } from '../src/data/universe.js';
import { weakestSubtypes } from '../src/cli/study.js';
import { CallTimes, classWeights, defaultTrainConfig, fitTemperature, fitTemperatureNll, learningRate, logProbs, trainRouter, trainRouterParams, clearSimulationCache, simulationCacheStats, prefetchSimulation } from '../src/training/train.js';
import { meanNll } from '../src/training/temperature.js';
import { calibrationFactors, kappaChain } from '../src/training/calibrate.task.js';

describe('training schedule and weights', () => {
  it('warms up linearly, peaks, then decays by cosine to the floor', () => {
    const c = { lr: 1e-2, warmupSteps: 10, minLrRatio: 0.1, steps: 110 };
    expect(learningRate(0, c)).toBeCloseTo(1e-3, 12);
    expect(learningRate(9, c)).toBeCloseTo(1e-2, 12);
    expect(learningRate(10, c)).toBeCloseTo(1e-2, 12);
    expect(learningRate(109, c)).toBeCloseTo(1e-3, 12);
    const mid = learningRate(10 + 99 / 2, c);
    expect(mid).toBeCloseTo(1e-2 * (0.1 + 0.9 * 0.5), 6);
    for (let s = 11; s < 110; s++) expect(learningRate(s, c)).toBeLessThanOrEqual(learningRate(s - 1, c));
  });

  it('weights classes so each contributes equally', () => {
    const labels = new Uint8Array([0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 3, 3]);
    const w = classWeights(labels);
    const contribution = [0, 1, 2, 3].map((c) => labels.filter((l) => l === c).length * w[c]!);
    for (const v of contribution) expect(v).toBeCloseTo(labels.length / 4, 10);
    expect(classWeights(new Uint8Array([1, 1, 2]))[0]).toBe(0);
  });

  it('recovers the temperature that generated the labels', () => {
    const rng = new Rng(5);
    const n = 20_000;
    const trueT = 2.5;
    const probs = new Float32Array(n * 4);
    const labels = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const z = [0, 1, 2, 3].map(() => rng.normal() * 4);
      const soft = (t: number) => {
        const e = z.map((v) => Math.exp(v / t));
        const s = e.reduce((a, b) => a + b, 0);
        return e.map((v) => v / s);
      };
      soft(1).forEach((p, d) => (probs[i * 4 + d] = p));
      const q = soft(trueT);
      let u = rng.next();
      let d = 0;
      while (d < 3 && u >= q[d]!) u -= q[d++]!;
      labels[i] = d;
    }
    const fitted = fitTemperature(probs, labels);
    expect(fitted).toBeGreaterThan(trueT * 0.9);
    expect(fitted).toBeLessThan(trueT * 1.1);
    // The minimiser itself, to ~1e-9: scaling every factor by r (a power of two: exact in float32) moves it to T / r
    // with the same NLL.
    const logp = logProbs(probs);
    const factor = new Float32Array(n).map(() => 1 + rng.next());
    for (const f of [undefined, factor]) {
      const fit = fitTemperatureNll(logp, labels, f);
      for (const r of [0.5, 2]) {
        const other = fitTemperatureNll(logp, labels, f === undefined ? new Float32Array(n).fill(r) : f.map((v) => v * r));
        expect(Math.abs(other.temperature * r - fit.temperature)).toBeLessThan(1e-9 * fit.temperature);
        expect(Math.abs(other.nll - fit.nll)).toBeLessThan(1e-12);
      }
      // From any start in the range (a neighbouring fit's optimum, or a bound), the same minimiser.
      for (const start of [0.05, 0.4, 1 / fit.temperature, 7, 20, 1e9]) {
        const from = fitTemperatureNll(logp, labels, f, start);
        expect(Math.abs(from.temperature - fit.temperature)).toBeLessThan(1e-9 * fit.temperature);
        expect(Math.abs(from.nll - fit.nll)).toBeLessThan(1e-12);
      }
    }
    // A run of κs, each fit started from the one before's optimum: each κ's own fit from T = 1.
    const shortness = new Float32Array(n).map(() => (rng.next() < 0.3 ? rng.next() : 0));
    const kappas = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7];
    const chain = kappaChain({ logp, labels, shortness, kappas });
    kappas.forEach((kappa, k) => {
      const alone = fitTemperatureNll(logp, labels, calibrationFactors(shortness, kappa));
      expect(Math.abs(chain[k]!.temperature - alone.temperature)).toBeLessThan(1e-9 * alone.temperature);
      expect(Math.abs(chain[k]!.nll - alone.nll)).toBeLessThan(1e-12);
    });
  });

  it('gives the NLL of the loop over classes bit for bit (the pass written out for four classes)', () => {
    // The pass as a plain loop over the classes: what fitTemperatureNll's written-out pass must equal exactly.
    const reference = (logp: Float64Array, labels: Uint8Array, factor: Float32Array, temperature: number): number => {
      const beta = 1 / temperature;
      let sum = 0;
      const e = [0, 0, 0, 0];
      for (let i = 0; i < labels.length; i++) {
        const b = beta * (1 / factor[i]!);
        let max = -Infinity;
        for (let d = 0; d < 4; d++) max = Math.max(max, logp[i * 4 + d]! * b);
        let z = 0;
        for (let d = 0; d < 4; d++) z += e[d] = Math.exp(logp[i * 4 + d]! * b - max);
        sum += max + Math.log(z) - logp[i * 4 + labels[i]!]! * (1 / factor[i]!) * beta;
      }
      return sum / labels.length;
    };
    const rng = new Rng(17);
    const n = 5_000;
    const probs = new Float32Array(n * 4).map(() => rng.next() ** 3);
    for (let i = 0; i < n; i++) {
      const s = probs[i * 4]! + probs[i * 4 + 1]! + probs[i * 4 + 2]! + probs[i * 4 + 3]!;
      for (let d = 0; d < 4; d++) probs[i * 4 + d] = probs[i * 4 + d]! / s;
    }
    const labels = new Uint8Array(n).map(() => rng.int(4));
    const factor = new Float32Array(n).map(() => 1 + 2 * rng.next());
    const logp = logProbs(probs);
    for (const t of [0.05, 0.37, 1, 2.9, 20]) expect(meanNll(logp, labels, factor, t)).toBe(reference(logp, labels, factor, t));
  });

  it('fits T inside [0.05, 20], at the bound when the data push past it', () => {
    // Labels always the top class: sharper is always better, the optimum is the lower bound.
    const probs = Float32Array.from([0.7, 0.1, 0.1, 0.1, 0.1, 0.6, 0.2, 0.1]);
    expect(fitTemperature(probs, Uint8Array.from([0, 1]))).toBeCloseTo(0.05, 9);
    // Labels always the bottom class: flatter is always better, the optimum is the upper bound.
    expect(fitTemperature(probs, Uint8Array.from([3, 3]))).toBeCloseTo(20, 6);
  });
});

describe('short training run', () => {
  it('reduces the loss and beats chance clearly on held-out simulator instruments', async () => {
    const config = defaultTrainConfig({ hidden: 16, seed: 3, steps: 300 });
    config.batchSize = 1024;
    config.warmupSteps = 20;
    config.lr = 1e-2;
    config.data = { ...config.data, trainSeeds: 1, tickersPerSubtype: 2, days: 600, validationTickersPerSubtype: 1, testTickersPerSubtype: 1 };
    const result = await trainRouter(config);
    expect(result.history).toHaveLength(300);
    expect(result.history.every((s) => Number.isFinite(s.loss))).toBe(true);
    expect(result.lossEnd).toBeLessThan(result.lossStart * 0.75);
    expect(result.temperature).toBeGreaterThan(0);
    expect(result.test.days).toBeGreaterThan(1000);
    // Chance is 25 %; a few hundred steps already separate the domains on unseen instruments.
    expect(result.test.perDay.accuracy).toBeGreaterThan(0.6);
    expect(result.params.every((v) => Number.isFinite(v))).toBe(true);
    // Every family's held-out histories, by sub-type (the study names a left-out family's weakest three).
    expect(Object.keys(result.testByFamily).sort()).toEqual([...REGIME_FAMILIES].sort());
    for (const m of Object.values(result.testByFamily)) {
      expect(Object.keys(m.bySubtype).sort()).toEqual(Object.values(SUBTYPES).flat().sort());
      expect(Object.values(m.bySubtype).every((v) => v >= 0 && v <= 1)).toBe(true);
    }
    const subtypes = result.testByFamily['crash-2020']!.bySubtype;
    const named = weakestSubtypes(subtypes).split(', ');
    expect(named).toHaveLength(3);
    const rates = named.map((w) => subtypes[w.slice(0, w.lastIndexOf(' ', w.length - 3))]!);
    expect(rates).toEqual([...rates].sort((x, y) => x - y));
    expect(Math.max(...rates)).toBeLessThanOrEqual(Math.min(...Object.values(subtypes).filter((v) => !rates.includes(v))));
  });

  it('refuses simulated histories shorter than the minimum history', async () => {
    const config = defaultTrainConfig({ steps: 1 });
    config.data = { ...config.data, trainSeeds: 1, days: 50 };
    await expect(trainRouter(config)).rejects.toThrow(/Expected integer ≥ the minimum history \(60 bars\) for data.days but received 50/);
  });

  it('is reproducible for a seed', async () => {
    const config = defaultTrainConfig({ hidden: 16, seed: 4, steps: 20 });
    config.batchSize = 256;
    config.threads = 1;
    config.data = { ...config.data, trainSeeds: 1, tickersPerSubtype: 1, days: 400, validationTickersPerSubtype: 1, testTickersPerSubtype: 1 };
    clearSimulationCache();
    const s0 = simulationCacheStats();
    const a = await trainRouter(config);
    const s1 = simulationCacheStats();
    // The second router finds the first's training, validation and test sets made; the third simulates them again.
    const b = await trainRouter(config);
    const s2 = simulationCacheStats();
    clearSimulationCache();
    const c = await trainRouter(config);
    const s3 = simulationCacheStats();
    expect([s1.misses - s0.misses, s1.hits - s0.hits]).toEqual([3, 0]);
    expect([s2.misses - s1.misses, s2.hits - s1.hits]).toEqual([0, 3]);
    expect([s3.misses - s2.misses, s3.hits - s2.hits]).toEqual([3, 0]);
    expect(a.params).toEqual(b.params);
    expect(a.params).toEqual(c.params);
    expect(a.temperature).toBe(b.temperature);
    expect(a.temperature).toBe(c.temperature);
    // The parameters alone (a cross-fitting fold's routers): the same bytes, from the training set only.
    const s4 = simulationCacheStats();
    const d = await trainRouterParams(config);
    const s5 = simulationCacheStats();
    expect([s5.misses - s4.misses, s5.hits - s4.hits]).toEqual([0, 1]);
    expect(d).toEqual(a.params);
    // A different seed trains different parameters: the equality above is not vacuous.
    const e = await trainRouterParams({ ...config, seed: 5 });
    expect(e).not.toEqual(a.params);
    // Sets simulated ahead (an ensemble's next member while one trains on the GPU): the router then finds all three
    // made, and trains the same bytes.
    clearSimulationCache();
    const s6 = simulationCacheStats();
    prefetchSimulation(config);
    const f = await trainRouter(config);
    const s7 = simulationCacheStats();
    // Six requests for three sets, each simulated once by whichever asked first.
    expect([s7.misses - s6.misses, s7.hits - s6.hits]).toEqual([3, 3]);
    expect(f.params).toEqual(a.params);
  });

  it('prepares a router whose steps wait for stepsAfter, then trains the same bytes; a rejected stepsAfter fails it', async () => {
    const config = defaultTrainConfig({ hidden: 16, seed: 4, steps: 20 });
    config.batchSize = 256;
    config.threads = 1;
    config.data = { ...config.data, trainSeeds: 1, tickersPerSubtype: 1, days: 400, validationTickersPerSubtype: 1, testTickersPerSubtype: 1 };
    const plain = await trainRouterParams(config);
    let go!: () => void;
    const gate = new Promise<void>((resolve) => (go = resolve));
    const steps: number[] = [];
    const logs: string[] = [];
    let dataMade!: () => void;
    const made = new Promise<void>((resolve) => (dataMade = resolve));
    const log = (m: string) => {
      logs.push(m);
      if (m.startsWith('data: ')) dataMade();
    };
    const gated = trainRouterParams(config, { stepsAfter: gate, onStep: (s) => steps.push(s.step), logEvery: 1, log });
    // The data made, the router waits: no step until the gate opens.
    await made;
    await new Promise((r) => setTimeout(r, 300));
    expect(steps).toEqual([]);
    go();
    expect(await gated).toEqual(plain);
    expect(steps).toHaveLength(20);
    expect(logs.find((m) => m.startsWith('steps: '))).toMatch(/s waiting for the router before it/);
    const failed = Promise.reject(new Error('the router before failed'));
    failed.catch(() => undefined); // handled by the router once its data is made
    await expect(trainRouterParams(config, { stepsAfter: failed })).rejects.toThrow('the router before failed');
  });
});

describe('fused calls timed', () => {
  it('splits each call into the addon\'s run, its wait for a pool thread, the rest, and the wait for the next batch', () => {
    const t = new CallTimes();
    expect(t.describe(16)).toBe('');
    t.add(10, Float64Array.of(2, 7));
    t.add(6, Float64Array.of(0, 5));
    t.feedMs += 1;
    expect(t.describe(16)).toBe('; a call of 16 steps: 6.00 ms running, 1.00 waiting for a pool thread, 1.00 for this thread\'s turn, 0.50 waiting for the next batch');
    // An addon that does not time its calls: nothing is said rather than a split of part of them.
    t.add(3);
    expect(t.describe(16)).toBe('');
  });
});

describe('the gate of a router prepared ahead (steps.task.ts)', () => {
  it('passes at once when open or absent, throws when stopped, and waits for another thread to open it', async () => {
    const { GATE, passGate } = await import('../src/training/steps.task.js');
    const { Worker } = await import('node:worker_threads');
    const gate = (v: number) => {
      const g = new Int32Array(new SharedArrayBuffer(4));
      g[0] = v;
      return g;
    };
    expect(passGate(undefined)).toBe(0);
    expect(passGate(gate(GATE.go))).toBeGreaterThanOrEqual(0);
    expect(() => passGate(gate(GATE.stop))).toThrow("Expected the go-ahead for this router's steps but the router before it failed");
    // Opened by another thread 200 ms later: this thread waits for it (Atomics.wait), then passes.
    for (const [value, opens] of [[GATE.go, true], [GATE.stop, false]] as const) {
      const g = gate(GATE.wait);
      const w = new Worker(
        `const { workerData } = require('node:worker_threads'); setTimeout(() => { Atomics.store(workerData, 0, ${value}); Atomics.notify(workerData, 0); }, 200);`,
        { eval: true, workerData: g },
      );
      const t0 = performance.now();
      if (opens) expect(passGate(g)).toBeGreaterThanOrEqual(150);
      else expect(() => passGate(g)).toThrow('the router before it failed');
      expect(performance.now() - t0).toBeGreaterThanOrEqual(150);
      await w.terminate();
    }
  });
});
