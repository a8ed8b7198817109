/**
 * Minibatches of the training loop, assembled ahead on a worker thread.
 *
 * Each step gathers 4,096 random tokens out of a token set of ~170 MB: a cache miss per token, ~0.9 ms per step on
 * the 2-core development VM (0.1–0.2 ms when the set fits in cache), as long as the GPU takes for the whole step. The
 * feeder thread runs the same shuffle (`BatchSampler`, same seed, same order) into a ring of batch slots in shared
 * memory while the main thread waits on the native trainer, so the training loop only waits for a batch when the
 * feeder falls behind. The batches, and therefore the trained weights, are the same bit for bit as when the loop
 * gathers them itself.
 */
import type { Piscina } from 'piscina';
import { Rng } from '../util/random.js';
import { createTaskPool, siblingTaskFile } from '../util/task-pool.js';
import { sharedCopy } from '../util/shared-memory.js';

/** The token arrays a sampler draws from. */
export interface SampleSource {
  hidden: number;
  x: Float32Array;
  vol: Float32Array;
  risk: Float32Array;
  labels: Uint8Array;
}

/** One minibatch: token inputs, labels and per-token sample weights (the class weight of each label). */
export interface BatchSlot {
  x: Float32Array;
  vol: Float32Array;
  risk: Float32Array;
  labels: Uint8Array;
  weights: Float32Array;
}

/** Batch slot views over `buffer` at `offset` (sizes as `slotBytes`). */
export function slotViews(buffer: ArrayBufferLike, offset: number, B: number, H: number): BatchSlot {
  let o = offset;
  const f32 = (n: number) => {
    const v = new Float32Array(buffer, o, n);
    o += 4 * n;
    return v;
  };
  const x = f32(B * H);
  const vol = f32(B);
  const risk = f32(B);
  const weights = f32(B);
  const labels = new Uint8Array(buffer, o, B);
  return { x, vol, risk, labels, weights };
}

/** Bytes of one slot, rounded up to 8 so every slot's Float32 views stay aligned. */
export function slotBytes(B: number, H: number): number {
  return (4 * B * (H + 3) + B + 7) & ~7;
}

/** Bytes of one ring slot of B tokens: a batch (`slotBytes`), or with `indices` their Uint32 indices. */
export function ringSlotBytes(indices: boolean, B: number, H: number): number {
  return indices ? 4 * B : slotBytes(B, H);
}

export function allocSlot(B: number, H: number): BatchSlot {
  return slotViews(new ArrayBuffer(slotBytes(B, H)), 0, B, H);
}

/**
 * Epochs of `count` tokens in a seeded random order (Fisher–Yates with `Rng.derive(seed, 'shuffle')`, each epoch's
 * order a shuffle of the one before); an epoch's last batch runs on into the next shuffle. The training loop's order
 * since the first release.
 *
 * A shuffle of a few million tokens takes a few hundred milliseconds (a cache miss a swap), longer than a trainer on
 * the GPU waits for a batch: so the next epoch's order is shuffled a little at a time, a swap for each token taken,
 * into a second array while this epoch's is read. The draws are the same and in the same order (the generator serves
 * only the shuffles), so the order is that of one shuffle at each epoch's start.
 */
export class TokenOrder {
  /** The epoch being read, and the next one's order: a copy of it shuffled from position n − 1 down to `#swapAt`. */
  #order: Uint32Array;
  #next: Uint32Array;
  #swapAt: number;
  readonly #rng: Rng;
  readonly #ks = new Uint32Array(4096);
  #cursor: number;

  constructor(count: number, seed: number) {
    this.#order = new Uint32Array(count);
    this.#next = new Uint32Array(count);
    for (let i = 0; i < count; i++) this.#next[i] = i;
    this.#swapAt = count - 1;
    this.#rng = Rng.derive(seed, 'shuffle');
    this.#cursor = count;
  }

  /** Index of the next token in the order, starting the next epoch at the end of this one. */
  take(): number {
    if (this.#cursor >= this.#order.length) this.#startEpoch();
    return this.#order[this.#cursor++]!;
  }

  /** Writes the indices of the next `out.length` tokens. */
  fillIndex(out: Uint32Array): void {
    this.#advance(out.length, out);
    this.shuffleAhead(out.length);
  }

  /** The next epoch's shuffle, as far as `taken` tokens taken (`take`) pay for: one swap a token, and one more. */
  shuffleAhead(taken: number): void {
    this.#shuffle(taken + 1);
  }

  /** Moves past the next `count` tokens (the shuffles still run). */
  skip(count: number): void {
    this.#advance(count);
    this.shuffleAhead(count);
  }

  /**
   * Moves past the next `count` tokens a run at a time, an epoch's end starting the next one (as `take()` does),
   * copying their indices into `out` when given.
   */
  #advance(count: number, out?: Uint32Array): void {
    for (let j = 0; j < count; ) {
      if (this.#cursor >= this.#order.length) this.#startEpoch();
      const run = Math.min(count - j, this.#order.length - this.#cursor);
      out?.set(this.#order.subarray(this.#cursor, this.#cursor + run), j);
      this.#cursor += run;
      j += run;
    }
  }

  /** The next epoch's shuffle, `swaps` more positions of it (n − 1 in all: at least one a token taken). */
  #shuffle(swaps: number): void {
    const next = this.#next;
    const rng = this.#rng;
    const ks = this.#ks;
    let i = this.#swapAt;
    const end = Math.max(0, i - swaps);
    // The positions drawn first, a block at a time, then swapped: the same draws and swaps in the same order, each
    // loop tight (together about a sixth faster).
    while (i > end) {
      const m = Math.min(ks.length, i - end);
      for (let j = 0; j < m; j++) ks[j] = rng.int(i - j + 1);
      for (let j = 0; j < m; j++, i--) {
        const k = ks[j]!;
        const tmp = next[i]!;
        next[i] = next[k]!;
        next[k] = tmp;
      }
    }
    this.#swapAt = i;
  }

  /** The next epoch's order, its shuffle finished, becomes this one; the one after starts as a copy of it. */
  #startEpoch(): void {
    this.#shuffle(Infinity);
    const read = this.#next;
    this.#next = this.#order;
    this.#order = read;
    this.#next.set(read);
    this.#swapAt = read.length - 1;
    this.#cursor = 0;
  }
}

/** Batches of a token set in `TokenOrder`, B tokens each, gathered with their class weights. */
export class BatchSampler {
  readonly #src: SampleSource;
  readonly #classWeights: Float64Array;
  readonly #order: TokenOrder;

  constructor(src: SampleSource, classWeights: Float64Array, seed: number) {
    this.#src = src;
    this.#classWeights = classWeights;
    this.#order = new TokenOrder(src.vol.length, seed);
  }

  /** Fills `slot` with the next `slot.vol.length` tokens. */
  fill(slot: BatchSlot): void {
    const { hidden: H, x, vol, risk, labels } = this.#src;
    const B = slot.vol.length;
    for (let j = 0; j < B; j++) {
      const n = this.#order.take();
      const s = n * H;
      const d = j * H;
      for (let k = 0; k < H; k++) slot.x[d + k] = x[s + k]!;
      slot.vol[j] = vol[n]!;
      slot.risk[j] = risk[n]!;
      slot.labels[j] = labels[n]!;
      slot.weights[j] = this.#classWeights[labels[n]!]!;
    }
    this.#order.shuffleAhead(B);
  }

  /** Moves past the next `count` tokens as `fill` would, without gathering them (the shuffles still run). */
  skip(count: number): void {
    this.#order.skip(count);
  }
}

/** `Atomics.waitAsync` (V8, Node ≥ 16), which the ES2022 library types lack. */
interface AtomicsWaitAsync {
  waitAsync(a: Int32Array, index: number, value: number, timeoutMs: number): { async: false; value: string } | { async: true; value: Promise<string> };
}

/** What the feeder thread is handed (`batch-feeder.task.ts`). */
export interface FeederData {
  /** Only the batches' token indices (`IndexFeeder`: `count` tokens, no arrays), or the batches themselves. */
  indices: boolean;
  count: number;
  hidden: number;
  x: Float32Array;
  vol: Float32Array;
  risk: Float32Array;
  labels: Uint8Array;
  classWeights: Float64Array;
  seed: number;
  /** Tokens per slot (`group` batches), and tokens of the last slot (fewer when the steps do not fill it). */
  batch: number;
  lastBatch: number;
  /** Slots to fill in all. */
  slotCount: number;
  slots: number;
  /** Feeder threads; this one fills the slots s with s mod threads = thread. */
  threads: number;
  thread: number;
  /** The ring: `slots` batch slots, then Int32s: the batches consumed, then one stamp per slot (its step + 1 once
   * filled). */
  ring: SharedArrayBuffer;
}

/** Index (Int32, after the slots) of the consumed counter and of slot 0's stamp. */
export const CONSUMED = 0;
export const STAMPS = 1;
/** The stamp of every slot once the feeder thread has failed. */
export const FAILED = -1;

/** What both feeders take: the shuffle's seed, tokens per batch, steps, and the ring and threads (`BatchFeeder`). */
export interface FeederOptions {
  seed: number;
  batch: number;
  steps: number;
  slots?: number;
  threads?: number;
  group?: number;
}

/** The ring of slots both feeders fill on worker threads, each slot `next()` once, in order. */
class SlotFeeder<T> {
  readonly #pool: Piscina;
  readonly #slots: T[];
  readonly #last: T;
  readonly #count: number;
  readonly #counters: Int32Array;
  #failed: Error | undefined;
  #next = 0;

  /** `what` gives the task its arrays (or none) and the slots' kind; `view` makes the view of a slot of `tokens`. */
  protected constructor(
    opts: FeederOptions,
    what: Pick<FeederData, 'indices' | 'count' | 'hidden' | 'x' | 'vol' | 'risk' | 'labels' | 'classWeights'>,
    view: (ring: SharedArrayBuffer, offset: number, tokens: number) => T,
  ) {
    const G = opts.group ?? 1;
    const T = opts.threads ?? 1;
    const K = opts.slots ?? Math.max(4, 2 * T);
    for (const [name, v, min] of [['batch', opts.batch, 1], ['steps', opts.steps, 0], ['slots', K, 1], ['threads', T, 1], ['group', G, 1]] as const) {
      if (!Number.isInteger(v) || v < min) throw new RangeError(`Expected integer ≥ ${min} for ${name} but received ${String(v)}`);
    }
    if (what.count === 0) throw new RangeError('Expected at least one token to sample from but received none');
    const B = opts.batch * G;
    const count = Math.ceil(opts.steps / G);
    const lastBatch = (opts.steps - (count - 1) * G) * opts.batch;
    const size = ringSlotBytes(what.indices, B, what.hidden);
    const ring = new SharedArrayBuffer(K * size + 4 * (STAMPS + K));
    this.#slots = Array.from({ length: K }, (_, i) => view(ring, i * size, B));
    this.#last = count > 0 ? view(ring, ((count - 1) % K) * size, lastBatch) : this.#slots[0]!;
    this.#count = count;
    this.#counters = new Int32Array(ring, K * size, STAMPS + K);
    const data: Omit<FeederData, 'thread'> = { ...what, seed: opts.seed, batch: B, lastBatch, slotCount: count, slots: K, threads: T, ring };
    // One long task per thread: the pool brings each thread's TypeScript loader, as for every task file.
    this.#pool = createTaskPool({ filename: siblingTaskFile(import.meta.url, 'batch-feeder.task'), minThreads: T, maxThreads: T });
    for (let t = 0; t < T; t++) {
      this.#pool.run({ ...data, thread: t } satisfies FeederData).catch((err: unknown) => {
        this.#failed ??= err instanceof Error ? err : new Error(String(err));
        // Wake a waiting `next` so it sees the failure.
        for (let i = 0; i < K; i++) Atomics.notify(this.#counters, STAMPS + i);
      });
    }
  }

  async next(): Promise<T> {
    const step = this.#next++;
    for (;;) {
      const r = this.#ready(step);
      if (typeof r !== 'number') return r;
      const w = (Atomics as unknown as AtomicsWaitAsync).waitAsync(this.#counters, STAMPS + (step % this.#slots.length), r, 1000);
      if (w.async) await w.value;
    }
  }

  /** `next` for a thread that does nothing else meanwhile (a router's own thread): it blocks in `Atomics.wait`. */
  nextSync(): T {
    const step = this.#next++;
    for (;;) {
      const r = this.#ready(step);
      if (typeof r !== 'number') return r;
      Atomics.wait(this.#counters, STAMPS + (step % this.#slots.length), r, 1000);
    }
  }

  /** The slot of `step` once it is filled, else the stamp to wait on; a feeder that failed throws. */
  #ready(step: number): T | number {
    if (this.#failed !== undefined) throw new Error(`batch feeder failed: ${this.#failed.message}`);
    const stamp = Atomics.load(this.#counters, STAMPS + (step % this.#slots.length));
    if (stamp === step + 1) return step === this.#count - 1 ? this.#last : this.#slots[step % this.#slots.length]!;
    if (stamp === FAILED) throw new Error('batch feeder failed on its thread');
    return stamp;
  }

  /** The slot last returned by `next` has been used: it may be refilled. */
  release(): void {
    Atomics.store(this.#counters, CONSUMED, this.#next);
    Atomics.notify(this.#counters, CONSUMED);
  }

  async close(): Promise<void> {
    // A feeder waiting for a free slot sleeps in Atomics.wait: destroying the pool ends its thread there.
    await this.#pool.destroy();
  }
}

/**
 * Batches for `steps` steps, `group` consecutive batches to a slot (one slot = group·batch tokens, the last slot only
 * the batches left), gathered on `threads` worker threads (slot s by thread s mod threads, each running the whole
 * shuffle and gathering only its own slots) at most `slots` slots ahead. `next()` resolves with the next slot (in
 * order, each once); it stays the caller's until `release()`, after which a feeder may overwrite it. `close()` stops
 * the threads. The batches are the same for any thread count and grouping.
 */
export class BatchFeeder extends SlotFeeder<BatchSlot> {
  constructor(src: SampleSource, classWeights: Float64Array, opts: FeederOptions) {
    const H = src.hidden;
    const what = {
      indices: false,
      count: src.vol.length,
      hidden: H,
      x: sharedCopy(src.x),
      vol: sharedCopy(src.vol),
      risk: sharedCopy(src.risk),
      labels: sharedCopy(src.labels),
      classWeights,
    };
    super(opts, what, (ring, offset, B) => slotViews(ring, offset, B, H));
  }
}

/**
 * The token indices of the batches `BatchFeeder` would gather from a set of `count` tokens (the same order, slots
 * and threads), drawn on worker threads: for a trainer whose backend holds the set and gathers the batches itself.
 * The shuffle of a large set (~0.2 s for 6 million tokens, each epoch) then stays off the calling thread.
 */
export class IndexFeeder extends SlotFeeder<Uint32Array> {
  constructor(count: number, opts: FeederOptions) {
    const none = { x: new Float32Array(0), vol: new Float32Array(0), risk: new Float32Array(0), labels: new Uint8Array(0) };
    const what = { indices: true, count, hidden: 0, ...none, classWeights: new Float64Array(0) };
    // A slot of indices is small (256 KB for 16 batches of 4,096): 16 of them let the thread run far enough ahead
    // that an epoch's turn (the copy that starts the next shuffle) never reaches a trainer.
    super({ slots: 16, ...opts }, what, (ring, offset, B) => new Uint32Array(ring, offset, B));
  }
}
