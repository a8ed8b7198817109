// Loading the native modules on the main thread first keeps their shared libraries mapped for the life of the
// process: with canvas loaded only inside workers, the process segfaulted on exit (exit code 139) once they ended.
import 'canvas';
import 'sharp';
import type { Piscina } from 'piscina';
import { createTaskPool, siblingTaskFile } from '../util/task-pool.js';
import { buildFigures } from './figure-data.js';
import { sampleReportInput } from './sample-input.js';

export interface RenderPoolOptions {
  /** Worker threads. Each holds one canvas per panel size (~10 MB). @defaultValue 2 */
  maxThreads?: number;
  /**
   * Threads kept alive while idle. A thread's first render loads chart.js, canvas and sharp and JIT-compiles the
   * chart code: the first 1,000-ticker report took 1.5–1.8 s against 0.8–1.1 s once warm (`npm run bench:report`),
   * so a report worker keeps its threads for its whole life. @defaultValue `maxThreads`
   */
  minThreads?: number;
  /** Milliseconds an idle thread lives. @defaultValue 30_000 */
  idleTimeout?: number;
}

/** A piscina pool running `render-task`; pass it to `renderReports` and `destroy()` it when done. */
export function createRenderPool(opts: RenderPoolOptions = {}): Piscina {
  const maxThreads = opts.maxThreads ?? 2;
  return createTaskPool({ filename: siblingTaskFile(import.meta.url, 'render-task'), maxThreads, minThreads: opts.minThreads ?? maxThreads, ...(opts.idleTimeout === undefined ? {} : { idleTimeout: opts.idleTimeout }) });
}

/**
 * Renders the four figures of a small sample run on every thread of the pool, so a report worker's first real run
 * does not pay for module loading and JIT compilation (first 1,000-ticker report on a fresh pool 1.5–1.8 s, after
 * warming 0.8–1.1 s; `npm run bench:report`). Resolves with the milliseconds it took.
 */
export async function warmRenderPool(pool: Piscina): Promise<number> {
  const t0 = performance.now();
  const figures = buildFigures(sampleReportInput({ seed: 1, tickers: 8, days: 20 }));
  // One set of four per thread, all queued at once: idle threads each take the next task, so every thread gets
  // figures of several kinds.
  const threads = Math.max(1, pool.threads.length, pool.options.minThreads);
  await Promise.all(Array.from({ length: threads }, () => figures.map((f) => pool.run(f))).flat());
  return performance.now() - t0;
}
