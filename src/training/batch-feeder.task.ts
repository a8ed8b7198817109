import { BatchSampler, CONSUMED, PRODUCED, slotBytes, slotViews, type BatchSlot, type FeederData } from './batch-feeder.js';

/**
 * The feeder thread of `BatchFeeder` (one task for the whole training): fills the ring's slots in step order with
 * `BatchSampler`, never more than `slots` batches ahead of the training loop, and returns after the last step.
 */
export default function feed(d: FeederData): number {
  const H = d.hidden;
  const B = d.batch;
  const bytes = slotBytes(B, H);
  const counters = new Int32Array(d.ring, d.slots * bytes, 2);
  const sampler = new BatchSampler({ hidden: H, x: d.x, vol: d.vol, risk: d.risk, labels: d.labels }, d.classWeights, d.seed);
  const slots: BatchSlot[] = Array.from({ length: d.slots }, (_, i) => slotViews(d.ring, i * bytes, B, H));

  for (let step = 0; step < d.steps; step++) {
    // Wait while the ring is full: the slot of step − slots is still the training loop's.
    for (;;) {
      const consumed = Atomics.load(counters, CONSUMED);
      if (step - consumed < d.slots) break;
      Atomics.wait(counters, CONSUMED, consumed);
    }
    sampler.fill(slots[step % d.slots]!);
    Atomics.store(counters, PRODUCED, step + 1);
    Atomics.notify(counters, PRODUCED);
  }
  return d.steps;
}
