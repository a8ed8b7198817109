import { BatchSampler, CONSUMED, FAILED, STAMPS, TokenOrder, ringSlotBytes, slotViews, type FeederData } from './batch-feeder.js';

/**
 * One feeder thread of `BatchFeeder` or `IndexFeeder` (one task for the whole training): runs the whole shuffle with
 * `BatchSampler` (or, for indices, `TokenOrder`) and fills the ring's slots s ≡ thread (mod threads) in order (the
 * last one with `lastBatch` tokens), never more than `slots` slots ahead of the training loop, stamping each with
 * s + 1; returns the number it filled.
 */
export default function feed(d: FeederData): number {
  const H = d.hidden;
  const B = d.batch;
  const bytes = ringSlotBytes(d.indices, B, H);
  const counters = new Int32Array(d.ring, d.slots * bytes, STAMPS + d.slots);
  const order = d.indices ? new TokenOrder(d.count, d.seed) : undefined;
  const sampler = d.indices ? undefined : new BatchSampler({ hidden: H, x: d.x, vol: d.vol, risk: d.risk, labels: d.labels }, d.classWeights, d.seed);
  const fill = (offset: number, tokens: number) => {
    if (order !== undefined) order.fillIndex(new Uint32Array(d.ring, offset, tokens));
    else sampler!.fill(slotViews(d.ring, offset, tokens, H));
  };
  try {
    return fillSlots(d, counters, bytes, fill, order ?? sampler!);
  } catch (e) {
    // A trainer that waits on its own thread (`nextSync`) sees no promise reject: every stamp says the feeder failed.
    for (let i = 0; i < d.slots; i++) {
      Atomics.store(counters, STAMPS + i, FAILED);
      Atomics.notify(counters, STAMPS + i);
    }
    throw e;
  }
}

function fillSlots(d: FeederData, counters: Int32Array, bytes: number, fill: (offset: number, tokens: number) => void, order: { skip(count: number): void }): number {
  const B = d.batch;
  let filled = 0;
  for (let step = 0; step < d.slotCount; step++) {
    const last = step === d.slotCount - 1;
    const tokens = last ? d.lastBatch : B;
    if (step % d.threads !== d.thread) {
      order.skip(tokens);
      continue;
    }
    // Wait while the ring is full: the slot of step − slots is still the training loop's.
    for (;;) {
      const consumed = Atomics.load(counters, CONSUMED);
      if (step - consumed < d.slots) break;
      Atomics.wait(counters, CONSUMED, consumed);
    }
    fill((step % d.slots) * bytes, tokens);
    Atomics.store(counters, STAMPS + (step % d.slots), step + 1);
    Atomics.notify(counters, STAMPS + (step % d.slots));
    filled++;
  }
  return filled;
}
