import { describe, expect, it } from 'vitest';
import { allocSlot, BatchFeeder, BatchSampler, IndexFeeder, TokenOrder, type SampleSource } from '../src/training/batch-feeder.js';
import { Rng } from '../src/util/random.js';
import feed from '../src/training/batch-feeder.task.js';
import { FAILED, STAMPS } from '../src/training/batch-feeder.js';

/** A small token set whose values name their token, so a batch shows which tokens it holds. */
function source(n: number, H = 4): SampleSource {
  return {
    hidden: H,
    x: Float32Array.from({ length: n * H }, (_, i) => i),
    vol: Float32Array.from({ length: n }, (_, i) => i + 0.5),
    risk: Float32Array.from({ length: n }, (_, i) => -i),
    labels: Uint8Array.from({ length: n }, (_, i) => i % 4),
  };
}

const cw = Float64Array.from([1, 2, 3, 4]);

describe('batch feeder', () => {
  it.each([
    [1, 3],
    [3, 4],
    [2, 2],
  ])('hands out, step by step, exactly the batches the sampler draws here (%i feeder threads, %i slots)', async (threads, slots) => {
    const src = source(37);
    const steps = 25; // 25 × 8 tokens: five passes over the 37 tokens, batches that straddle two shuffles
    const here = new BatchSampler(src, cw, 11);
    const mine = allocSlot(8, 4);
    const feeder = new BatchFeeder(src, cw, { seed: 11, batch: 8, steps, slots, threads });
    try {
      const seen = new Set<number>();
      for (let step = 0; step < steps; step++) {
        const slot = await feeder.next();
        here.fill(mine);
        for (const k of ['x', 'vol', 'risk', 'labels', 'weights'] as const) expect(Array.from(slot[k])).toEqual(Array.from(mine[k]));
        for (const v of slot.vol) seen.add(v - 0.5);
        expect(Array.from(slot.weights)).toEqual(Array.from(slot.labels, (l) => cw[l]!));
        feeder.release();
      }
      expect(seen.size).toBe(37);
    } finally {
      await feeder.close();
    }
  });

  it.each([
    [1, 3],
    [2, 4],
  ])('groups consecutive batches into one slot, the last only those left (%i feeder threads, %i batches a slot)', async (threads, group) => {
    const src = source(37);
    const steps = 25;
    const here = new BatchSampler(src, cw, 11);
    const mine = allocSlot(8, 4);
    const feeder = new BatchFeeder(src, cw, { seed: 11, batch: 8, steps, threads, group });
    try {
      for (let step = 0; step < steps; ) {
        const slot = await feeder.next();
        const k = Math.min(group, steps - step);
        expect(slot.vol.length).toBe(8 * k);
        for (let j = 0; j < k; j++) {
          here.fill(mine);
          expect(Array.from(slot.x.subarray(j * 32, (j + 1) * 32))).toEqual(Array.from(mine.x));
          expect(Array.from(slot.labels.subarray(j * 8, (j + 1) * 8))).toEqual(Array.from(mine.labels));
          expect(Array.from(slot.weights.subarray(j * 8, (j + 1) * 8))).toEqual(Array.from(mine.weights));
        }
        feeder.release();
        step += k;
      }
    } finally {
      await feeder.close();
    }
  });

  it('another seed gives another order; a closed feeder stops even while it waits for a free slot', async () => {
    const src = source(50);
    const a = allocSlot(10, 4);
    const b = allocSlot(10, 4);
    new BatchSampler(src, cw, 1).fill(a);
    new BatchSampler(src, cw, 2).fill(b);
    expect(Array.from(a.vol)).not.toEqual(Array.from(b.vol));
    // Nothing is released: the feeder fills its two slots and then waits.
    const feeder = new BatchFeeder(src, cw, { seed: 1, batch: 10, steps: 1000, slots: 2 });
    expect(Array.from((await feeder.next()).vol)).toEqual(Array.from(a.vol));
    await feeder.close();
  });

  it.each([
    [1, 1],
    [2, 3],
  ])('draws on its threads the token indices of the batches the sampler gathers (IndexFeeder; %i threads, %i batches a slot)', async (threads, group) => {
    const src = source(37);
    const steps = 25;
    const here = new BatchSampler(src, cw, 11);
    const mine = allocSlot(8, 4);
    const order = new TokenOrder(37, 11);
    const index = new Uint32Array(8);
    const feeder = new IndexFeeder(37, { seed: 11, batch: 8, steps, threads, group });
    try {
      for (let step = 0; step < steps; ) {
        const slot = await feeder.next();
        const k = Math.min(group, steps - step);
        expect(slot).toBeInstanceOf(Uint32Array);
        expect(slot.length).toBe(8 * k);
        for (let j = 0; j < k; j++) {
          here.fill(mine);
          order.fillIndex(index);
          // The values name their token: the indices are those of the tokens the sampler gathered.
          expect(Array.from(slot.subarray(j * 8, (j + 1) * 8), (i) => i + 0.5)).toEqual(Array.from(mine.vol));
          expect(Array.from(slot.subarray(j * 8, (j + 1) * 8))).toEqual(Array.from(index));
        }
        feeder.release();
        step += k;
      }
    } finally {
      await feeder.close();
    }
    expect(() => new IndexFeeder(0, { seed: 1, batch: 8, steps: 1 })).toThrow('Expected at least one token to sample from but received none');
  });

  it('takes each epoch in the order of a whole Fisher–Yates shuffle of the one before, however the takes are cut', () => {
    // The reference: the identity, then at every epoch's start one whole shuffle of the previous order.
    const reference = (n: number, seed: number, total: number): number[] => {
      const rng = Rng.derive(seed, 'shuffle');
      const order = Array.from({ length: n }, (_, i) => i);
      const out: number[] = [];
      while (out.length < total) {
        for (let i = n - 1; i > 0; i--) {
          const k = rng.int(i + 1);
          [order[i], order[k]] = [order[k]!, order[i]!];
        }
        out.push(...order.slice(0, total - out.length));
      }
      return out;
    };
    for (const [n, cuts] of [
      [1, [1, 1, 3]],
      [37, [8, 8, 8, 40, 1, 37, 5, 60]],
      [1000, [4096, 3, 999, 1, 2500]],
      // Shuffles longer than the block of positions drawn at once (4,096), cut anywhere.
      [10_000, [5000, 3, 9000, 4097, 1, 12_000, 8191]],
    ] as const) {
      const total = cuts.reduce((a, b) => a + b, 0);
      const want = reference(n, 5, total);
      const order = new TokenOrder(n, 5);
      const got: number[] = [];
      cuts.forEach((c, i) => {
        if (i % 3 === 2) {
          // skip, then read what was skipped from the reference's position onwards
          order.skip(c);
          got.push(...want.slice(got.length, got.length + c));
        } else if (i % 3 === 1) {
          for (let j = 0; j < c; j++) got.push(order.take());
        } else {
          const out = new Uint32Array(c);
          order.fillIndex(out);
          got.push(...out);
        }
      });
      expect(got).toEqual(want);
      // And what follows a skip is where the reference is.
      const after = new Uint32Array(7);
      order.fillIndex(after);
      expect(Array.from(after)).toEqual(reference(n, 5, total + 7).slice(total));
    }
  });

  it('hands a thread that waits for them (nextSync) the slots next() hands out', async () => {
    const steps = 25;
    const want = new IndexFeeder(37, { seed: 11, batch: 8, steps, threads: 2, group: 3 });
    const got = new IndexFeeder(37, { seed: 11, batch: 8, steps, threads: 2, group: 3 });
    try {
      for (let step = 0; step < steps; step += 3) {
        const a = Array.from(await want.next());
        want.release();
        expect(Array.from(got.nextSync())).toEqual(a);
        got.release();
      }
    } finally {
      await want.close();
      await got.close();
    }
  });

  it("marks every slot FAILED when its thread fails, so a thread blocked in nextSync learns of it", () => {
    // A ring too small for the slot it is asked to fill: the fill throws.
    const slots = 2;
    const ring = new SharedArrayBuffer(slots * 32 + 4 * (STAMPS + slots));
    const data = {
      indices: true, count: 10, hidden: 0, x: new Float32Array(0), vol: new Float32Array(0), risk: new Float32Array(0),
      labels: new Uint8Array(0), classWeights: new Float64Array(0), seed: 1, batch: 8, lastBatch: 100, slotCount: 1,
      slots, threads: 1, thread: 0, ring,
    };
    expect(() => feed(data)).toThrow(RangeError);
    const counters = new Int32Array(ring, slots * 32, STAMPS + slots);
    expect(Array.from(counters.subarray(STAMPS))).toEqual([FAILED, FAILED]);
  });

  it('refuses bad sizes with the value it received', () => {
    expect(() => new BatchFeeder(source(5), cw, { seed: 1, batch: 0, steps: 3 })).toThrow('Expected integer ≥ 1 for batch but received 0');
    expect(() => new BatchFeeder(source(5), cw, { seed: 1, batch: 2, steps: 3, slots: 0 })).toThrow('Expected integer ≥ 1 for slots but received 0');
    expect(() => new BatchFeeder(source(5), cw, { seed: 1, batch: 2, steps: 3, threads: 1.5 })).toThrow('Expected integer ≥ 1 for threads but received 1.5');
    expect(() => new BatchFeeder(source(0), cw, { seed: 1, batch: 2, steps: 3 })).toThrow('Expected at least one token to sample from but received none');
  });
});
