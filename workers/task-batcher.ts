/**
 * Groups small pool tasks into one while the pool is busy.
 *
 * A fetch job's feature task takes a pool thread a few hundred microseconds; handing it over and back cost the
 * fetch worker's main thread about as much again (piscina's bookkeeping, a structured clone each way and one wake-up
 * of the main thread per finished task: 73 µs of main-thread CPU per task on the 2-core development VM, 100 µs with
 * the run's 18.8 KB market context cloned into every task). Tasks that arrive while every thread is busy wait here
 * and leave together as one pool task as soon as a thread is free, so that hand-over and the context's clone (a
 * structured clone copies an object that several tasks share once) are paid once per batch. A task that arrives
 * while a thread is free leaves at once: batching adds no latency to an idle pool, and batches grow only with the
 * backlog (about concurrency ÷ threads tasks each).
 */

/** One task's outcome inside a batch: its result, or the message of what it threw (only that task fails). */
export type BatchOutcome<R> = { ok: R } | { error: string };

export interface TaskBatcherOptions<T, R> {
  /** Runs one batch (one pool task), resolving with one outcome per task in order. */
  runBatch: (tasks: T[], transferList: ArrayBuffer[]) => Promise<BatchOutcome<R>[]>;
  /** Batches in flight at most: the pool's threads. */
  slots: number;
  /** Tasks per batch at most. @defaultValue 16 */
  maxBatch?: number;
}

interface Pending<T, R> {
  task: T;
  transfer: ArrayBuffer[];
  resolve: (r: R) => void;
  reject: (e: Error) => void;
}

export class TaskBatcher<T, R> {
  readonly #runBatch: TaskBatcherOptions<T, R>['runBatch'];
  readonly #slots: number;
  readonly #maxBatch: number;
  #queue: Pending<T, R>[] = [];
  #inFlight = 0;

  constructor(opts: TaskBatcherOptions<T, R>) {
    for (const [name, v] of [['slots', opts.slots], ['maxBatch', opts.maxBatch ?? 16]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`Expected integer ≥ 1 for ${name} but received ${String(v)}`);
    }
    this.#runBatch = opts.runBatch;
    this.#slots = opts.slots;
    this.#maxBatch = opts.maxBatch ?? 16;
  }

  /** Batches in flight and tasks waiting for a slot (for tests and metrics). */
  get state(): { inFlight: number; waiting: number } {
    return { inFlight: this.#inFlight, waiting: this.#queue.length };
  }

  /** Runs `task` in the next batch; `transfer` lists buffers that move with it. Rejects with the task's own error. */
  run(task: T, transfer: ArrayBuffer[] = []): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.#queue.push({ task, transfer, resolve, reject });
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#inFlight < this.#slots && this.#queue.length > 0) {
      const batch = this.#queue.splice(0, this.#maxBatch);
      this.#inFlight += 1;
      let done: Promise<BatchOutcome<R>[]>;
      try {
        done = this.#runBatch(
          batch.map((p) => p.task),
          batch.flatMap((p) => p.transfer),
        );
      } catch (err) {
        done = Promise.reject(err instanceof Error ? err : new Error(String(err)));
      }
      done
        .then(
          (outcomes) => {
            if (outcomes.length !== batch.length) {
              throw new Error(`Expected ${batch.length} outcomes from a batch of ${batch.length} tasks but received ${outcomes.length}`);
            }
            batch.forEach((p, i) => {
              const o = outcomes[i]!;
              if ('ok' in o) p.resolve(o.ok);
              else p.reject(new Error(o.error));
            });
          },
        )
        .catch((err: unknown) => {
          // The whole batch failed (a thread died, the pool closed): every task of it fails with that reason.
          const e = err instanceof Error ? err : new Error(String(err));
          for (const p of batch) p.reject(e);
        })
        .finally(() => {
          this.#inFlight -= 1;
          this.#pump();
        });
    }
  }
}
