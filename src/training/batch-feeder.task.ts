import { BatchSampler, CONSUMED, STAMPS, slotBytes, slotViews, type BatchSlot, type FeederData } from './batch-feeder.js';

/**
 * One feeder thread of `BatchFeeder` (one task for the whole training): runs the whole shuffle with `BatchSampler`
 * and fills the ring's slots with the steps s ≡ thread (mod threads), never more than `slots` batches ahead of the
 * training loop, stamping each slot with its step + 1; returns after the last step.
 */
export default function feed(d: FeederData): number {
  const H = d.hidden;
  const B = d.batch;
  const bytes = slotBytes(B, H);
  const counters = new Int32Array(d.ring, d.slots * bytes, STAMPS + d.slots);
  const sampler = new BatchSampler({ hidden: H, x: d.x, vol: d.vol, risk: d.risk, labels: d.labels }, d.classWeights, d.seed);
  const slots: BatchSlot[] = Array.from({ length: d.slots }, (_, i) => slotViews(d.ring, i * bytes, B, H));
  let filled = 0;
  for (let step = 0; step < d.steps; step++) {
    if (step % d.threads !== d.thread) {
      sampler.skip(B);
      continue;
    }
    // Wait while the ring is full: the slot of step − slots is still the training loop's.
    for (;;) {
      const consumed = Atomics.load(counters, CONSUMED);
      if (step - consumed < d.slots) break;
      Atomics.wait(counters, CONSUMED, consumed);
    }
    sampler.fill(slots[step % d.slots]!);
    Atomics.store(counters, STAMPS + (step % d.slots), step + 1);
    Atomics.notify(counters, STAMPS + (step % d.slots));
    filled++;
  }
  return filled;
}
