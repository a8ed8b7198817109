import { describe, expect, it } from 'vitest';
import { memberConfig, trainEnsemble } from '../src/training/ensemble.js';
import { defaultTrainConfig, fitTemperature, trainRouterParams, type TrainConfig } from '../src/training/train.js';
import { averageMembers } from '../src/router/ensemble.js';
import { averageMembersOnPool, fitTemperatureOnPool } from '../src/training/pool-scoring.js';
import { isShared } from '../src/util/shared-memory.js';
import { Rng } from '../src/util/random.js';

function tinyConfig(): TrainConfig {
  const config = defaultTrainConfig({ hidden: 16, seed: 4, steps: 12 });
  config.batchSize = 256;
  config.threads = 1;
  config.data = { ...config.data, trainSeeds: 1, tickersPerSubtype: 1, days: 400, validationTickersPerSubtype: 1, testTickersPerSubtype: 1 };
  return config;
}

describe('trainEnsemble', () => {
  it('scores the same ensemble with its members trained at once as one after another', async () => {
    const config = tinyConfig();
    const one = await trainEnsemble(config, [3, 5]);
    const once = await trainEnsemble(config, [3, 5], {}, { concurrent: true });
    expect(once.params).toEqual(one.params);
    expect(once.temperature).toBe(one.temperature);
    expect(once.test).toEqual(one.test);
    expect(once.validation).toEqual(one.validation);
    expect(once.testByFamily).toEqual(one.testByFamily);
    expect(once.memberTest).toEqual(one.memberTest);
    // The members differ (the ensemble averages two routers, not one twice), and are each the router their seed trains.
    expect(once.params[0]).not.toEqual(once.params[1]);
    expect(once.params[1]).toEqual(await trainRouterParams(memberConfig(config, 5)));
    expect(once.first.params).toEqual(once.params[0]);
    expect(once.first.sets).toBeUndefined();
    // Each member alone on the first member's test histories: its own argmax, counted.
    expect(once.memberTest).toHaveLength(2);
    for (const m of once.memberTest) {
      for (const v of [m.perDay, m.perTicker]) expect(v >= 0 && v <= 1).toBe(true);
    }
    expect(once.memberTest[0]).not.toEqual(once.memberTest[1]);
    // The first member alone is the first member's own held-out figure (the same histories; the argmax does not
    // depend on its temperature).
    expect(once.memberTest[0]!.perDay).toBeCloseTo(once.first.test.perDay.accuracy, 12);
    expect(once.memberTest[0]!.perTicker).toBeCloseTo(once.first.test.perTicker.accuracy, 12);
  });

  it("fails with a member's error, whichever member fails, once every member has settled", async () => {
    const config = tinyConfig();
    for (const failing of [1, 2]) {
      const lines: string[] = [];
      const log = (m: string) => {
        if (m.startsWith(`[member ${failing}] steps:`)) throw new Error(`member ${failing} failed`);
        lines.push(m);
      };
      await expect(trainEnsemble(config, [3, 5], { log }, { concurrent: true })).rejects.toThrow(`member ${failing} failed`);
      // The other member ran to its end before the ensemble gave up: the first one's is its held-out scoring, the
      // second's (its parameters alone) its steps.
      const end = failing === 1 ? '[member 2] steps:' : '[member 1] held-out scoring:';
      expect(lines.filter((l) => l.startsWith(end))).toHaveLength(1);
    }
  });
});

describe('held-out scoring on the pool', () => {
  it("gives averageMembers' and fitTemperature's bytes, rows split over threads", async () => {
    const rng = new Rng(9);
    const n = 200_003; // not a multiple of the split
    const member = () => {
      const p = new Float32Array(n * 4);
      for (let i = 0; i < n; i++) {
        const w = [0, 1, 2, 3].map(() => Math.exp(4 * rng.next()));
        const z = w.reduce((a, b) => a + b, 0);
        w.forEach((v, d) => (p[i * 4 + d] = v / z));
      }
      return p;
    };
    const outs = [member(), member(), member()];
    const labels = new Uint8Array(n).map(() => rng.int(4));
    for (const t of [1, 0.61]) {
      const here = averageMembers(outs, t);
      const pooled = await averageMembersOnPool(outs, t, 2);
      expect(isShared(pooled.probs)).toBe(true);
      expect(Buffer.from(pooled.probs.buffer).equals(Buffer.from(here.probs.buffer))).toBe(true);
      expect(pooled.assign).toEqual(here.assign);
    }
    const mean = averageMembers(outs, 1).probs;
    expect(await fitTemperatureOnPool(mean, labels, 2)).toBe(fitTemperature(mean, labels));
    expect(await fitTemperatureOnPool(mean, labels, 1)).toBe(fitTemperature(mean, labels));
  });
});
