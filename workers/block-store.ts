import { storeFetchedBlocks, type RunStore } from '../jobs/run-meta.js';

/**
 * Gathers the feature blocks that fetch jobs store in the same turn of the event loop into one script call per run.
 *
 * The feature pool hands back a batch of tasks at once (task-batcher.ts), so several jobs reach their store together.
 * One at a time, each store is a socket write on the fetch worker's main thread and a script call in Redis; on the
 * 2-core development VM, with the feature threads busy, such a write costs 60–80 µs of the main thread's CPU (CPU
 * profile of `bench:pipeline`, docs/performance.md). Gathered, the blocks of a batch leave in one write and one
 * script. Each job still waits for its own block to be stored before it completes (nothing is acknowledged before it
 * is in Redis), and the script is atomic: a batch is stored whole or not at all, and a failed call fails every job of
 * the batch, which BullMQ then retries as it would one.
 */
export class BlockStore {
  readonly #store: RunStore;
  readonly #ttlSeconds: number;
  readonly #maxBlocks: number;
  readonly #maxBytes: number;
  #pending = new Map<string, Pending[]>();
  #scheduled = false;

  /**
   * @param maxBlocks blocks per script call at most @defaultValue 64
   * @param maxBytes bytes of blocks per script call at most (a call always takes at least one) @defaultValue 4 MiB
   */
  constructor(store: RunStore, ttlSeconds: number, opts: { maxBlocks?: number; maxBytes?: number } = {}) {
    for (const [name, v] of [['ttlSeconds', ttlSeconds], ['maxBlocks', opts.maxBlocks ?? 64], ['maxBytes', opts.maxBytes ?? 4 << 20]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`Expected integer ≥ 1 for ${name} but received ${String(v)}`);
    }
    this.#store = store;
    this.#ttlSeconds = ttlSeconds;
    this.#maxBlocks = opts.maxBlocks ?? 64;
    this.#maxBytes = opts.maxBytes ?? 4 << 20;
  }

  /** Stores `block` under `key` for run `runId`: undefined once stored, or the status of a run that has ended. */
  store(runId: string, key: string, block: Buffer): Promise<string | undefined> {
    return new Promise((resolve, reject) => {
      let list = this.#pending.get(runId);
      if (list === undefined) this.#pending.set(runId, (list = []));
      list.push({ key, block, resolve, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        // After the promise jobs of this turn: every job whose features arrived with this batch has queued its block.
        setImmediate(() => this.#flush());
      }
    });
  }

  #flush(): void {
    this.#scheduled = false;
    const pending = this.#pending;
    this.#pending = new Map();
    for (const [runId, list] of pending) {
      let from = 0;
      while (from < list.length) {
        let to = from + 1;
        let bytes = list[from]!.block.length;
        while (to < list.length && to - from < this.#maxBlocks && bytes + list[to]!.block.length <= this.#maxBytes) bytes += list[to++]!.block.length;
        const chunk = list.slice(from, to);
        storeFetchedBlocks(this.#store, runId, chunk, this.#ttlSeconds).then(
          (ended) => chunk.forEach((p) => p.resolve(ended)),
          (err: unknown) => chunk.forEach((p) => p.reject(err instanceof Error ? err : new Error(String(err)))),
        );
        from = to;
      }
    }
  }
}

interface Pending {
  key: string;
  block: Buffer;
  resolve: (ended: string | undefined) => void;
  reject: (err: Error) => void;
}
