import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { move, Piscina, transferableSymbol, valueSymbol } from 'piscina';
import { expectedMessage } from './describe.js';

/**
 * The one way the project makes a piscina pool: the feature pool of the fetch worker and the render pool of the
 * report worker differ only in their task file and thread counts.
 */

export interface TaskPoolOptions {
  /** The task module, as a path or a file URL. A `.ts` task gets the tsx loader (workerExecArgv). */
  filename: string | URL;
  /** Worker threads at most. @defaultValue 1 */
  maxThreads?: number;
  /** Threads kept alive while idle (at most `maxThreads`). @defaultValue 0 */
  minThreads?: number;
  /** Milliseconds an idle thread above `minThreads` lives. @defaultValue 30000 */
  idleTimeout?: number;
  /**
   * Added to each thread's nice value as it starts (piscina's `niceIncrement`, through the optional `@napi-rs/nice`;
   * on Linux a thread's own): throughput work that should leave the cores to the process's other threads whenever
   * they have work. @defaultValue 0
   */
  niceIncrement?: number;
}

/**
 * Node options for the pool's threads. Worker threads do not inherit a loader registered by `tsx`'s CLI flags only
 * when the parent was started without them (vitest, a plain `node`): the tsx loader is added whenever the task file is
 * TypeScript and the parent's arguments do not name tsx. It is resolved from this file, not from the working
 * directory, so a process started elsewhere still finds it.
 */
export function workerExecArgv(taskFile: string, parentArgv: readonly string[] = process.execArgv): string[] {
  const argv = [...parentArgv];
  if (taskFile.endsWith('.ts') && !argv.some((a) => a.includes('tsx'))) {
    const loader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
    argv.push('--import', loader);
  }
  return argv;
}

/**
 * The task module `name` beside the module at `base` (an `import.meta.url`): `name.ts` when the sources run, or
 * `name.js` / `name.mjs` when they were compiled or bundled (a bundle of a CLI ships its task files beside it).
 */
export function siblingTaskFile(base: string | URL, name: string): URL {
  const tried: string[] = [];
  for (const ext of ['.ts', '.js', '.mjs']) {
    const url = new URL(`./${name}${ext}`, base);
    if (existsSync(url)) return url;
    tried.push(fileURLToPath(url));
  }
  throw new Error(`Expected a task module ${name}.ts, .js or .mjs but found none of ${tried.join(', ')}`);
}

function checkInteger(value: unknown, name: string, min: number): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new RangeError(expectedMessage(`integer ≥ ${min}`, `options.${name}`, value));
  }
  return value;
}

/** A piscina pool running `opts.filename`; options are checked first (`Expected integer ≥ 1 for options.maxThreads …`). */
export function createTaskPool(opts: TaskPoolOptions): Piscina {
  const maxThreads = checkInteger(opts.maxThreads, 'maxThreads', 1) ?? 1;
  const minThreads = Math.min(checkInteger(opts.minThreads, 'minThreads', 0) ?? 0, maxThreads);
  const idleTimeout = checkInteger(opts.idleTimeout, 'idleTimeout', 0) ?? 30_000;
  const niceIncrement = checkInteger(opts.niceIncrement, 'niceIncrement', 0) ?? 0;
  const file = opts.filename instanceof URL ? fileURLToPath(opts.filename) : opts.filename;
  return new Piscina({ filename: pathToFileURL(file).href, maxThreads, minThreads, idleTimeout, niceIncrement, execArgv: workerExecArgv(file) });
}

/**
 * A task's result whose typed arrays' buffers move to the caller instead of being copied (each buffer once, however
 * many of `views` share it). The task must not touch those arrays afterwards: they are detached on its side.
 */
export function movedResult<T extends object>(value: T, views: Iterable<ArrayBufferView>): T {
  const buffers = new Set<ArrayBuffer>();
  for (const v of views) if (v.buffer instanceof ArrayBuffer && v.buffer.byteLength > 0) buffers.add(v.buffer);
  return move({ [transferableSymbol]: [...buffers], [valueSymbol]: value }) as unknown as T;
}
