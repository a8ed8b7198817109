/**
 * One pool of worker threads for the trainer's CPU work: the simulator's market histories (`tokens.task.ts`), the
 * real folder's features (`features.task.ts`), the calibration's fits and the held-out scoring's temperature fits and
 * ensemble means (`calibrate.task.ts`, `pool-scoring.ts`). Every token set, real row and cross-fit slice of a process shares it,
 * so a command that trains many routers at once (an ensemble and its cross-fit's folds) runs as many threads as it
 * was given, not one pool of that size per set in the making, and each thread warms up once.
 *
 * Tasks start in order of priority (lower first), then of submission: a router's training data goes before
 * held-out sets that are read only after its steps, and the first routers' before the later ones'. The pool keeps no
 * more tasks running than it has threads, so a later, more urgent task waits for one task, not for a queue. Results
 * do not depend on the order: every caller puts its results together in its own order.
 */
import type { Piscina } from 'piscina';
import { createTaskPool, siblingTaskFile } from '../util/task-pool.js';

/** The task modules the pool runs (beside this file, `.ts` or bundled `.js`/`.mjs`). */
export type WorkTaskFile = 'tokens.task' | 'features.task' | 'calibrate.task';

/**
 * Priorities: a task the training cannot start without, a router's training data, a cross-fit's slices (read as soon
 * as a fold's routers are trained, and the calibration that ends the command waits for them), and what is read later
 * (the held-out simulator sets, which each router reads after its steps).
 */
export const PRIORITY = { urgent: -1, training: 0, slices: 999, later: 1_000 } as const;

interface Queued {
  task: unknown;
  file: WorkTaskFile;
  priority: number;
  seq: number;
  resolve: (value: unknown) => void;
  reject: (reason: unknown) => void;
}

export class TrainingWorkPool {
  readonly threads: number;
  #pool: Piscina | undefined;
  #queue: Queued[] = [];
  #running = 0;
  #seq = 0;
  #files = new Map<WorkTaskFile, URL>();
  #idle: (() => void)[] = [];
  /** Tasks run and their time on a thread (ms, start to settling), by task file. */
  readonly busy = new Map<WorkTaskFile, { tasks: number; ms: number }>();

  constructor(threads: number) {
    if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`Expected integer ≥ 1 for threads but received ${String(threads)}`);
    this.threads = threads;
  }

  /** Runs `task` in `file` on a thread once the tasks before it (by priority, then submission) have started. */
  run<T>(file: WorkTaskFile, task: unknown, priority: number = PRIORITY.training): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ task, file, priority, seq: this.#seq++, resolve: resolve as (v: unknown) => void, reject });
      this.#pump();
    });
  }

  /** Tasks submitted and not yet settled. */
  get pending(): number {
    return this.#queue.length + this.#running;
  }

  #pump(): void {
    while (this.#running < this.threads && this.#queue.length > 0) {
      // The queue is short (hundreds of tasks at most): a scan for the first in order beats keeping a heap.
      let best = 0;
      for (let i = 1; i < this.#queue.length; i++) {
        const q = this.#queue[i]!;
        const b = this.#queue[best]!;
        if (q.priority < b.priority || (q.priority === b.priority && q.seq < b.seq)) best = i;
      }
      const next = this.#queue.splice(best, 1)[0]!;
      this.#running += 1;
      let started: Promise<unknown>;
      const t0 = performance.now();
      try {
        started = this.#piscina().run(next.task, { filename: this.#file(next.file).href });
      } catch (e) {
        started = Promise.reject(e); // no task module: this task fails, the pool goes on
      }
      started.then(next.resolve, next.reject).finally(() => {
        const b = this.busy.get(next.file) ?? { tasks: 0, ms: 0 };
        this.busy.set(next.file, { tasks: b.tasks + 1, ms: b.ms + performance.now() - t0 });
        this.#running -= 1;
        this.#pump();
        if (this.pending === 0) for (const wake of this.#idle.splice(0)) wake();
      });
    }
  }

  #file(name: WorkTaskFile): URL {
    let file = this.#files.get(name);
    if (file === undefined) this.#files.set(name, (file = siblingTaskFile(import.meta.url, name)));
    return file;
  }

  #piscina(): Piscina {
    // Idle threads are unreferenced (piscina), so a pool left open does not keep the process alive. The threads run
    // niced (workPoolNice): their work is throughput, while the threads that feed and drive the GPU's routers and the
    // main thread wait on each other and on the device.
    return (this.#pool ??= createTaskPool({ filename: this.#file('tokens.task'), maxThreads: this.threads, niceIncrement: workPoolNice() }));
  }

  /**
   * Stops the pool: tasks not yet started are rejected (a command that ends early does not wait for the sets it
   * asked for ahead), the running ones are waited for, then the threads stop. A later `run` starts new ones.
   */
  async close(): Promise<void> {
    for (const q of this.#queue.splice(0)) q.reject(new Error(`Expected the training work pool open for a ${q.file} task but it was closed before the task started`));
    if (this.pending > 0) await new Promise<void>((wake) => this.#idle.push(wake));
    const pool = this.#pool;
    this.#pool = undefined;
    await pool?.destroy();
  }
}

/** The work pool's threads' nice value when `MOE_TRAIN_WORK_NICE` is unset. */
export const DEFAULT_WORK_NICE = 10;

/**
 * How much the work pool's threads lower their priority (`MOE_TRAIN_WORK_NICE`, an integer 0–19, 0 for none;
 * default DEFAULT_WORK_NICE). The simulation keeps every idle core, but a router's index feeder, its thread that
 * launches the next call, and the main thread get a core first when they have work: on a 16-core GPU host the
 * simulation's threads otherwise delay them, and the routers wait for their indices. The numbers are the same.
 */
export function workPoolNice(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.MOE_TRAIN_WORK_NICE;
  if (raw === undefined || raw === '') return DEFAULT_WORK_NICE;
  const v = raw.trim();
  if (!/^\d+$/.test(v) || Number(v) > 19) throw new RangeError(`Expected an integer 0–19 for MOE_TRAIN_WORK_NICE but received '${raw}'`);
  return Number(v);
}

const pools = new Map<number, TrainingWorkPool>();

/** The process's pool of `threads` threads (one per thread count asked), or none for one thread: work runs in place. */
export function trainingWorkPool(threads: number): TrainingWorkPool | undefined {
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`Expected integer ≥ 1 for threads but received ${String(threads)}`);
  if (threads === 1) return undefined;
  let pool = pools.get(threads);
  if (pool === undefined) pools.set(threads, (pool = new TrainingWorkPool(threads)));
  return pool;
}

/** What the pools `trainingWorkPool` made have run: tasks and seconds on a thread, by task file (a command's summary). */
export function workPoolBusy(): Map<WorkTaskFile, { tasks: number; seconds: number }> {
  const out = new Map<WorkTaskFile, { tasks: number; seconds: number }>();
  for (const pool of pools.values()) {
    for (const [file, b] of pool.busy) {
      const o = out.get(file) ?? { tasks: 0, seconds: 0 };
      out.set(file, { tasks: o.tasks + b.tasks, seconds: o.seconds + b.ms / 1000 });
    }
  }
  return out;
}

let steps: Piscina | undefined;

/**
 * The threads that train routers on the GPU, one router each (`steps.task.ts`), for the whole of its steps: started
 * as routers ask for them (as many as train at once; they mostly wait on the device), apart from the work pool, whose
 * threads the host's CPU work keeps busy.
 */
export function routerThreads(): Piscina {
  return (steps ??= createTaskPool({ filename: siblingTaskFile(import.meta.url, 'steps.task'), maxThreads: 64, idleTimeout: 5_000 }));
}

/** Closes every pool `trainingWorkPool` made and the router threads, once their tasks have settled (a command's end,
 * a test's teardown). */
export async function closeTrainingWorkPools(): Promise<void> {
  const routers = steps;
  steps = undefined;
  await Promise.all([...[...pools.values()].map((p) => p.close()), routers?.destroy()]);
}
