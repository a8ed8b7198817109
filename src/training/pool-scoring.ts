/**
 * The held-out scoring's arithmetic on the process's pool of worker threads (work-pool.ts, `calibrate.task.ts`): a
 * temperature fit and an ensemble's mean probabilities. The trainer's JS thread is shared by every router of a command
 * (their calls, the cross-fit's routing, the calibration's data), so what one router's scoring computes for a second or
 * more runs elsewhere while that thread serves the others. The same numbers as in place: the same code, rows split
 * where each row depends on its own inputs alone. With one thread it all runs in place.
 */
import { NUM_DOMAINS as D } from '../domains.js';
import { averageMembers, memberRows, type EnsembleOutput } from '../router/ensemble-mean.js';
import { sharedArray, sharedCopy } from '../util/shared-memory.js';
import type { AverageTask, TemperatureTask } from './calibrate.task.js';
import { fitTemperature } from './temperature.js';
import { trainingWorkPool } from './work-pool.js';

/** Rows of an ensemble's mean per task, at least: fewer would cost more in messages than they save. */
const AVERAGE_ROWS = 65_536;

/** `fitTemperature(probsAtT1, labels)` on a pool thread (`threads` > 1) or here. */
export async function fitTemperatureOnPool(probsAtT1: Float32Array, labels: Uint8Array, threads: number): Promise<number> {
  const pool = trainingWorkPool(threads);
  if (pool === undefined) return fitTemperature(probsAtT1, labels);
  const task: TemperatureTask = { probsAtT1: sharedCopy(probsAtT1), labels: sharedCopy(labels) };
  return pool.run<number>('calibrate.task', task);
}

/** `averageMembers(outs, temperature)` with its rows split over the pool's threads (`threads` > 1, outputs in shared
 * memory) or here. */
export async function averageMembersOnPool(outs: readonly Float32Array[], temperature: number, threads: number): Promise<EnsembleOutput> {
  const pool = trainingWorkPool(threads);
  const n = memberRows(outs);
  if (pool === undefined || n < 2 * AVERAGE_ROWS) return averageMembers(outs, temperature);
  const out = { probs: sharedArray(Float32Array, n * D), assign: sharedArray(Uint8Array, n) };
  const shared = outs.map((o) => sharedCopy(o));
  const parts = Math.min(threads, Math.floor(n / AVERAGE_ROWS));
  const step = Math.ceil(n / parts);
  await Promise.all(
    Array.from({ length: parts }, (_, k) => {
      const task: AverageTask = { outs: shared, temperature, probs: out.probs, assign: out.assign, from: k * step, to: Math.min(n, (k + 1) * step) };
      return pool.run<null>('calibrate.task', task);
    }),
  );
  return out;
}
