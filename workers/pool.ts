import os from 'node:os';
import { Piscina } from 'piscina';

/**
 * Piscina pools running TypeScript task files. Worker threads do not inherit a loader registered by `tsx`, so the
 * tsx ESM loader is imported explicitly; checked under the `tsx` CLI (where it is registered a second time, harmlessly)
 * and under vitest.
 */

export interface TsPoolOptions {
  /** Task module (a `.ts` file next to this one). */
  filename: URL;
  /** @defaultValue the CPU count, at most 4 */
  maxThreads?: number;
  /** Threads exit after this long idle. @defaultValue 30000 */
  idleTimeout?: number;
}

/**
 * One thread per CPU: the fetch worker's main thread only moves jobs and Redis blocks (simulated bars and features
 * are made on the pool), so the pool may have every core. With CPUs − 1 threads a 2-CPU host computed features on
 * one core while the other idled: 5,000 tickers spent 18.5 s in the fetch stage (bench:pipeline).
 */
export function defaultThreads(): number {
  return Math.max(1, Math.min(4, os.availableParallelism()));
}

export function createTsPool(opts: TsPoolOptions): Piscina {
  const maxThreads = opts.maxThreads ?? defaultThreads();
  if (!Number.isInteger(maxThreads) || maxThreads < 1) {
    throw new RangeError(`Expected positive integer for maxThreads but received ${String(maxThreads)}`);
  }
  // Resolved from this file, not from the working directory, so a process started elsewhere still finds tsx.
  const execArgv = [...process.execArgv, '--import', import.meta.resolve('tsx')];
  return new Piscina({
    filename: opts.filename.href,
    minThreads: 0,
    maxThreads,
    idleTimeout: opts.idleTimeout ?? 30_000,
    execArgv,
  });
}

export function createFeaturePool(maxThreads?: number): Piscina {
  const o: TsPoolOptions = { filename: new URL('./features.task.ts', import.meta.url) };
  if (maxThreads !== undefined) o.maxThreads = maxThreads;
  return createTsPool(o);
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
