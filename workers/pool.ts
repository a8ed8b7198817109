import os from 'node:os';
import type { Piscina } from 'piscina';
import { createTaskPool } from '../src/util/task-pool.js';

/** The fetch worker's feature pool, and a way to wait for a pool's running tasks at shutdown. */

/**
 * One thread per CPU: the fetch worker's main thread only moves jobs and Redis blocks (simulated bars and features
 * are made on the pool), so the pool may have every core. With CPUs − 1 threads a 2-CPU host computed features on
 * one core while the other idled: 5,000 tickers spent 18.5 s in the fetch stage (bench:pipeline).
 */
export function defaultThreads(): number {
  return Math.max(1, Math.min(4, os.availableParallelism()));
}

/** The feature pool (`features.task.ts`): threads start on demand and end after 30 s idle. */
export function createFeaturePool(maxThreads: number = defaultThreads()): Piscina {
  return createTaskPool({ filename: new URL('./features.task.ts', import.meta.url), maxThreads, minThreads: 0, idleTimeout: 30_000 });
}

/**
 * Counts the pool's running tasks so a shutdown can wait for them. Work that a handed-back job started (a render,
 * a warm-up) runs on after its job is released, and a thread terminated inside native code (canvas) can abort the
 * whole process; piscina's own `close()` resolves early when some threads are idle. Returns `idle(timeoutMs)`,
 * which resolves once no task runs or the time is up.
 */
export function trackRunning(pool: Piscina): { idle(timeoutMs: number): Promise<void> } {
  let running = 0;
  let waiters: (() => void)[] = [];
  const run = pool.run.bind(pool);
  pool.run = ((task: unknown, options?: Parameters<Piscina['run']>[1]) => {
    running += 1;
    return run(task, options).finally(() => {
      running -= 1;
      if (running === 0) for (const w of waiters.splice(0)) w();
    });
  }) as Piscina['run'];
  return {
    idle: (timeoutMs) =>
      running === 0
        ? Promise.resolve()
        : new Promise<void>((resolve) => {
            const timer = setTimeout(() => {
              waiters = waiters.filter((w) => w !== done);
              resolve();
            }, timeoutMs);
            const done = () => {
              clearTimeout(timer);
              resolve();
            };
            waiters.push(done);
          }),
  };
}
