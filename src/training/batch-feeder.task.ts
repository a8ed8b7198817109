import { BatchSampler, CONSUMED, STAMPS, slotBytes, slotViews, type BatchSlot, type FeederData } from './batch-feeder.js';

/**
 * One feeder thread of `BatchFeeder` (one task for the whole training): runs the whole shuffle with `BatchSampler`
 * and fills the ring's slots s ≡ thread (mod threads) in order (the last one with `lastBatch` tokens), never more
 * than `slots` slots ahead of the training loop, stamping each with s + 1; returns the number it filled.
 */
export default function feed(d: FeederData): number {
  const H = d.hidden;
  const B = d.batch;
  const bytes = slotBytes(B, H);
  const counters = new Int32Array(d.ring, d.slots * bytes, STAMPS + d.slots);
  const sampler = new BatchSampler({ hidden: H, x: d.x, vol: d.vol, risk: d.risk, labels: d.labels }, d.classWeights, d.seed);
  const slots: BatchSlot[] = Array.from({ length: d.slots }, (_, i) => slotViews(d.ring, i * bytes, B, H));
  let filled = 0;
  for (let step = 0; step < d.slotCount; step++) {
    const last = step === d.slotCount - 1;
    if (step % d.threads !== d.thread) {
      sampler.skip(last ? d.lastBatch : B);
      continue;
    }
    // Wait while the ring is full: the slot of step − slots is still the training loop's.
    for (;;) {
      const consumed = Atomics.load(counters, CONSUMED);
      if (step - consumed < d.slots) break;
      Atomics.wait(counters, CONSUMED, consumed);
    }
    sampler.fill(last ? slotViews(d.ring, (step % d.slots) * bytes, d.lastBatch, H) : slots[step % d.slots]!);
    Atomics.store(counters, STAMPS + (step % d.slots), step + 1);
    Atomics.notify(counters, STAMPS + (step % d.slots));
    filled++;
  }
  return filled;
}
