import { describe, expect, it } from 'vitest';
import { NO_CONTEXT } from '../src/data/features/context.js';
import { simulateBars } from '../src/data/sim/simulator.js';
import featureTask, { barsToColumns, type FeatureTask } from '../workers/features.task.js';
import { TaskBatcher, type BatchOutcome } from '../workers/task-batcher.js';

/** A pool stand-in whose batches finish when the test says so, recording what each batch held. */
function manualPool() {
  const batches: { tasks: number[]; finish: (outcomes: BatchOutcome<number>[]) => void; fail: (e: Error) => void }[] = [];
  const runBatch = (tasks: number[]) =>
    new Promise<BatchOutcome<number>[]>((resolve, reject) => {
      batches.push({ tasks, finish: resolve, fail: reject });
    });
  return { batches, runBatch };
}

const settle = () => new Promise((r) => setImmediate(r));
const doubled = (tasks: number[]): BatchOutcome<number>[] => tasks.map((t) => ({ ok: 2 * t }));

describe('task batcher', () => {
  it('sends a task at once while a slot is free and groups the backlog into the next free slot', async () => {
    const pool = manualPool();
    const b = new TaskBatcher<number, number>({ runBatch: pool.runBatch, slots: 2, maxBatch: 3 });
    const results = [1, 2, 3, 4, 5, 6, 7].map((t) => b.run(t));
    // Two slots: tasks 1 and 2 leave alone at once; 3..7 wait.
    expect(pool.batches.map((x) => x.tasks)).toEqual([[1], [2]]);
    expect(b.state).toEqual({ inFlight: 2, waiting: 5 });
    pool.batches[1]!.finish(doubled(pool.batches[1]!.tasks));
    await settle();
    // The freed slot takes the backlog, at most maxBatch at a time.
    expect(pool.batches.map((x) => x.tasks)).toEqual([[1], [2], [3, 4, 5]]);
    pool.batches[0]!.finish(doubled(pool.batches[0]!.tasks));
    await settle();
    expect(pool.batches.map((x) => x.tasks)).toEqual([[1], [2], [3, 4, 5], [6, 7]]);
    pool.batches[2]!.finish(doubled(pool.batches[2]!.tasks));
    pool.batches[3]!.finish(doubled(pool.batches[3]!.tasks));
    expect(await Promise.all(results)).toEqual([2, 4, 6, 8, 10, 12, 14]);
    await settle();
    expect(b.state).toEqual({ inFlight: 0, waiting: 0 });
  });

  it('fails only the task whose outcome is an error, and a whole batch when the batch itself fails', async () => {
    const pool = manualPool();
    const b = new TaskBatcher<number, number>({ runBatch: pool.runBatch, slots: 1 });
    const first = b.run(1);
    const rest = [2, 3, 4].map((t) => b.run(t));
    pool.batches[0]!.fail(new Error('thread died'));
    await expect(first).rejects.toThrow('thread died');
    await settle();
    expect(pool.batches[1]!.tasks).toEqual([2, 3, 4]);
    pool.batches[1]!.finish([{ ok: 4 }, { error: 'RangeError: bad bars for 3' }, { ok: 8 }]);
    const got = await Promise.allSettled(rest);
    expect(got.map((g) => (g.status === 'fulfilled' ? g.value : (g.reason as Error).message))).toEqual([4, 'RangeError: bad bars for 3', 8]);
    // The batcher goes on after failures.
    const later = b.run(5);
    await settle();
    pool.batches[2]!.finish([{ ok: 10 }]);
    expect(await later).toBe(10);
  });

  it('rejects a batch answered with the wrong number of outcomes, and bad options', async () => {
    const b = new TaskBatcher<number, number>({ runBatch: async () => [{ ok: 1 }], slots: 1 });
    const both = [b.run(1), b.run(2), b.run(3)];
    await expect(both[0]).resolves.toBe(1);
    await expect(both[1]).rejects.toThrow('Expected 2 outcomes from a batch of 2 tasks but received 1');
    await expect(both[2]).rejects.toThrow('Expected 2 outcomes from a batch of 2 tasks but received 1');
    expect(() => new TaskBatcher({ runBatch: async () => [], slots: 0 })).toThrow('Expected integer ≥ 1 for slots but received 0');
    expect(() => new TaskBatcher({ runBatch: async () => [], slots: 1, maxBatch: 1.5 })).toThrow('Expected integer ≥ 1 for maxBatch but received 1.5');
  });
});

describe('feature task batch', () => {
  const bars = simulateBars('BATCH', { class: 'Equities', subtype: 'stock' }, 400, 23, '2024-06-28');

  it('answers each task of a batch as it would alone, a failing one with its own error', async () => {
    const good: FeatureTask = { ticker: 'BATCH', hidden: 16, context: NO_CONTEXT, bars: barsToColumns(bars), days: 60 };
    const sim: FeatureTask = { ticker: 'SPY', hidden: 16, context: NO_CONTEXT, sim: { seed: 7, range: { days: 30 } } };
    const bad = { ticker: 'BAD', hidden: 16, context: [NO_CONTEXT[0]], bars: barsToColumns(bars), days: 60 } as FeatureTask;
    const alone = await Promise.all([good, sim].map((t) => featureTask(t)));
    const { outcomes } = await featureTask({ batch: [good, bad, sim] });
    expect(outcomes).toHaveLength(3);
    expect(outcomes[0]).toEqual({ ok: alone[0] });
    expect(outcomes[1]).toEqual({ error: expect.stringMatching(/^Expected a context of \d+ series \(or null\) for BAD but received 1$/) });
    expect(outcomes[2]).toEqual({ ok: alone[1] });
  });
});
