import os from 'node:os';
import type { Piscina } from 'piscina';
import { createTaskPool, siblingTaskFile } from '../src/util/task-pool.js';
import { expectedMessage } from '../src/util/describe.js';

/** The fetch worker's feature pool, and a way to wait for a pool's running tasks at shutdown. */

/** Most feature threads one process takes by default, however many CPUs are its share (the limit of earlier releases). */
export const MAX_DEFAULT_FEATURE_THREADS = 4;

/**
 * Feature threads of one fetch process when none are given: its share of the host's CPUs, ⌊cpus / hostProcs⌋, at
 * least 1 and at most `MAX_DEFAULT_FEATURE_THREADS`. The fetch worker's main thread only moves jobs and Redis
 * blocks (simulated bars and features are made on the pool), so one process alone may have every core: with
 * CPUs − 1 threads a 2-CPU host computed features on one core while the other idled (5,000 tickers spent 18.5 s in
 * the fetch stage, bench:pipeline). P processes on one host (`MOE_HOST_PROCS`) split the cores instead of each
 * starting one thread per core: 8 processes on 16 cores take 2 threads each, not 4 (32 threads for 16 cores).
 * The share is rounded down because each process's main thread needs CPU too (BullMQ, ioredis: about a third of a
 * fetch process's CPU on the development VM).
 * @param hostProcs - fetch processes on this host, `Config.hostProcs`. @defaultValue 1
 * @param cpus - CPUs of the host. @defaultValue `os.availableParallelism()`
 */
export function defaultFeatureThreads(hostProcs = 1, cpus: number = os.availableParallelism()): number {
  if (!Number.isInteger(hostProcs) || hostProcs < 1) throw new RangeError(expectedMessage('integer ≥ 1', 'hostProcs', hostProcs));
  if (!Number.isInteger(cpus) || cpus < 1) throw new RangeError(expectedMessage('integer ≥ 1', 'cpus', cpus));
  return Math.max(1, Math.min(MAX_DEFAULT_FEATURE_THREADS, Math.floor(cpus / hostProcs)));
}

/** The feature pool (`features.task.ts`): threads start on demand and end after 30 s idle. */
export function createFeaturePool(maxThreads: number = defaultFeatureThreads()): Piscina {
  return createTaskPool({ filename: siblingTaskFile(import.meta.url, 'features.task'), maxThreads, minThreads: 0, idleTimeout: 30_000 });
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
