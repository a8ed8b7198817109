import { afterAll, describe, expect, it } from 'vitest';
import { simulatedTokens, simulatedTokensParallel } from '../src/training/tokens.js';
import type { RegimeFamily } from '../src/data/sim/regimes.js';
import { siblingTaskFile } from '../src/util/task-pool.js';
import { lruPromise } from '../src/util/lru.js';
import os from 'node:os';
import { closeTrainingWorkPools, DEFAULT_WORK_NICE, PRIORITY, TrainingWorkPool, trainingWorkPool, workPoolNice, type WorkTaskFile } from '../src/training/work-pool.js';
import { createTaskPool } from '../src/util/task-pool.js';
import type { SeedTokens, SeedTokensTask } from '../src/training/tokens.js';

describe('simulated token sets', () => {
  afterAll(closeTrainingWorkPools);

  it('are the same bit for bit whether the seeds run on worker threads or here', async () => {
    const opts = { seeds: [31, 32, 33], tickersPerSubtype: 1, days: 320, contextDropout: 0.5, newListingShare: 0.3, familyOf: (s: number): RegimeFamily => (s % 2 === 0 ? 'crisis-2008' : 'calm-bull') };
    const here = simulatedTokens(16, opts);
    const threaded = await simulatedTokensParallel(16, opts, 2);
    expect(here.size).toBeGreaterThan(1000);
    expect(threaded.size).toBe(here.size);
    expect(Buffer.from(threaded.x.buffer).equals(Buffer.from(here.x.buffer))).toBe(true);
    expect(Buffer.from(threaded.vol.buffer).equals(Buffer.from(here.vol.buffer))).toBe(true);
    expect(Buffer.from(threaded.risk.buffer).equals(Buffer.from(here.risk.buffer))).toBe(true);
    expect(Buffer.from(threaded.labels).equals(Buffer.from(here.labels))).toBe(true);
    expect(threaded.tickers).toEqual(here.tickers);
    // Names carry their history when there are several; families follow familyOf.
    expect(here.tickers[0]!.ticker).toMatch(/@31$/);
    expect(new Set(here.tickers.map((t) => `${t.seed}:${t.family}`))).toEqual(new Set(['31:calm-bull', '32:crisis-2008', '33:calm-bull']));
    await expect(simulatedTokensParallel(16, opts, 0)).rejects.toThrow('Expected integer ≥ 1 for threads but received 0');
  });

  it('run the work pool niced as MOE_TRAIN_WORK_NICE says, each pool thread on its own, this thread as it was', async () => {
    expect(workPoolNice({})).toBe(DEFAULT_WORK_NICE);
    expect(workPoolNice({ MOE_TRAIN_WORK_NICE: '0' })).toBe(0);
    expect(workPoolNice({ MOE_TRAIN_WORK_NICE: '19' })).toBe(19);
    for (const bad of ['20', '-1', '2.5', 'low']) expect(() => workPoolNice({ MOE_TRAIN_WORK_NICE: bad })).toThrow(`Expected an integer 0–19 for MOE_TRAIN_WORK_NICE but received '${bad}'`);
    expect(() => createTaskPool({ filename: new URL('./helpers/priority.task.ts', import.meta.url), niceIncrement: -1 })).toThrow('Expected integer ≥ 0 for options.niceIncrement');
    const base = os.getPriority();
    const niced = createTaskPool({ filename: new URL('./helpers/priority.task.ts', import.meta.url), maxThreads: 1, niceIncrement: 7 });
    const plain = createTaskPool({ filename: new URL('./helpers/priority.task.ts', import.meta.url), maxThreads: 1 });
    try {
      expect(await niced.run(null)).toBe(Math.min(19, base + 7));
      expect(await plain.run(null)).toBe(base);
    } finally {
      await Promise.all([niced.destroy(), plain.destroy()]);
    }
    expect(os.getPriority()).toBe(base);
  });

  it('finds a task module beside its caller, or says which files it looked for', () => {
    expect(siblingTaskFile(new URL('../src/training/tokens.ts', import.meta.url), 'tokens.task').pathname).toMatch(/src\/training\/tokens\.task\.ts$/);
    expect(() => siblingTaskFile(import.meta.url, 'no-such.task')).toThrow(/^Expected a task module no-such\.task\.ts, \.js or \.mjs but found none of .*no-such\.task\.ts, .*no-such\.task\.js, .*no-such\.task\.mjs$/);
  });

  it('share one pool of threads per process, tasks started by priority, then in order of submission', async () => {
    expect(trainingWorkPool(1)).toBeUndefined();
    expect(trainingWorkPool(3)).toBe(trainingWorkPool(3));
    expect(() => trainingWorkPool(0)).toThrow('Expected integer ≥ 1 for threads but received 0');
    // One thread: tasks finish in the order they start. The first starts at once; the rest wait and start by priority.
    const pool = new TrainingWorkPool(1);
    const task = (seed: number): SeedTokensTask => ({ hidden: 16, seed, opts: { tickersPerSubtype: 1, days: 200, family: 'recent' } });
    const done: number[] = [];
    const submit = (seed: number, priority: number, file: WorkTaskFile = 'tokens.task') =>
      pool.run<SeedTokens>(file, task(seed), priority).then((r) => void done.push(r.seed));
    const all = [submit(1, PRIORITY.later), submit(2, PRIORITY.later), submit(3, PRIORITY.training + 1), submit(4, PRIORITY.training), submit(5, PRIORITY.urgent), submit(6, PRIORITY.training)];
    expect(pool.pending).toBe(6);
    // A task of the other module on the same threads; a malformed one fails alone.
    const bad = pool.run('features.task', { kind: 'rows', args: null }, PRIORITY.urgent);
    await expect(bad).rejects.toThrow();
    await Promise.all(all);
    expect(done).toEqual([1, 5, 4, 6, 3, 2]);
    await pool.close();
    expect(pool.pending).toBe(0);
    // Closing rejects what has not started and waits for what has; the pool runs again afterwards.
    const running = submit(7, PRIORITY.training);
    const queued = pool.run('tokens.task', task(8));
    queued.catch(() => undefined);
    await pool.close();
    await expect(queued).rejects.toThrow('Expected the training work pool open for a tokens.task task but it was closed before the task started');
    await running;
    expect(done.at(-1)).toBe(7);
    await submit(9, PRIORITY.training);
    expect(done.at(-1)).toBe(9);
    await pool.close();
  });
});

describe('sets cached while in the making', () => {
  it('are made once, counted, forgotten when they fail, and bounded in number', async () => {
    const cache = new Map<string, Promise<number>>();
    const stats = { hits: 0, misses: 0 };
    let made = 0;
    const make = (v: number) => () => ((made += 1), v < 0 ? Promise.reject(new Error(`bad ${v}`)) : Promise.resolve(v));
    expect(await lruPromise(cache, 'a', 2, make(1), stats)).toBe(1);
    expect(await lruPromise(cache, 'a', 2, make(9), stats)).toBe(1);
    expect(stats).toEqual({ hits: 1, misses: 1 });
    await expect(lruPromise(cache, 'b', 2, make(-1), stats)).rejects.toThrow('bad -1');
    expect(cache.has('b')).toBe(false);
    expect(await lruPromise(cache, 'b', 2, make(2), stats)).toBe(2);
    await lruPromise(cache, 'c', 2, make(3), stats);
    expect([...cache.keys()]).toEqual(['b', 'c']);
    expect(made).toBe(4);
    expect(stats).toEqual({ hits: 1, misses: 4 });
  });
});

describe('a held-out set routed in its chunks', () => {
  it('gives the joined set’s outputs bit for bit without joining it, and the history bands count every day once', async () => {
    const { createTrainerBackend, predictTokenSet, heldOutBreakdown, HISTORY_BANDS } = await import('../src/training/train.js');
    const { MIN_HISTORY_BARS } = await import('../src/data/features/compute.js');
    const { initParams } = await import('../src/router/model.js');
    const opts = { seeds: [41, 42, 43], tickersPerSubtype: 1, days: 400, newListingShare: 0.5, familyOf: (): RegimeFamily => 'calm-bull' };
    const chunked = simulatedTokens(16, opts);
    expect(chunked.chunks!.length).toBe(3);
    const backend = createTrainerBackend(16, 2, () => undefined);
    try {
      backend.setParams(initParams(16, 5), 0.8);
      const inChunks = await predictTokenSet(backend, chunked);
      expect(chunked.chunks!.length).toBe(3); // not joined
      const joined = simulatedTokens(16, opts);
      void joined.x;
      expect(joined.chunks!.length).toBe(1);
      const whole = await predictTokenSet(backend, joined);
      expect(Buffer.from(inChunks.probs.buffer).equals(Buffer.from(whole.probs.buffer))).toBe(true);
      expect(inChunks.preds.map((p) => Array.from(p.assign))).toEqual(whole.preds.map((p) => Array.from(p.assign)));
      // The bands against a count made here: token j of an instrument saw j + MIN_HISTORY_BARS bars.
      const b = heldOutBreakdown(chunked, inChunks.preds);
      const right = HISTORY_BANDS.map(() => 0);
      const days = HISTORY_BANDS.map(() => 0);
      chunked.tickers.forEach((t, i) =>
        inChunks.preds[i]!.assign.forEach((a, j) => {
          const k = HISTORY_BANDS.findIndex((band) => j + MIN_HISTORY_BARS < band.below);
          days[k]! += 1;
          right[k]! += a === t.label ? 1 : 0;
        }),
      );
      expect(days.every((d) => d > 0)).toBe(true);
      expect(days.reduce((s, d) => s + d, 0)).toBe(chunked.size);
      expect(b.testByHistory).toEqual(Object.fromEntries(HISTORY_BANDS.map((band, k) => [band.name, right[k]! / days[k]!])));
    } finally {
      backend.close();
    }
  });
});
