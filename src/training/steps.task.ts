/**
 * Piscina task of the GPU trainer (`fitRouter`, train.ts): one router's steps on a thread of its own.
 *
 * A router trained on the process's main thread waits, between two fused calls, for a thread of Node's pool (four
 * by default, shared by every router training at once) and then for a turn of the main thread, which the command's
 * other work (token sets, scoring, the cross-fit's slices) holds for seconds at a time. Here the thread does nothing
 * else: it hands the device its training set, then makes each call and waits for it (`trainStepsOnSetSync`), the next
 * batch's indices drawn meanwhile on the feeder's thread (`IndexFeeder.nextSync`), as the routers of
 * `moe_cuda_bench`'s `train-concurrent` row do. The same calls with the same inputs in the same order: the same
 * parameters, bit for bit, as the steps made on the main thread.
 */
import type { Hidden } from '../router/layout.js';
import { NativeRouter } from '../router/native.js';
import { movedResult } from '../util/task-pool.js';
import { IndexFeeder } from './batch-feeder.js';

/** One router's steps: its start, its training set (in shared memory) and its schedule. */
export interface StepsTask {
  hidden: Hidden;
  /** The parameters the steps start from. */
  params: Float32Array;
  /** The training set's parts, one after another (`tokenChunks`), each array over a SharedArrayBuffer. */
  parts: { x: Float32Array; vol: Float32Array; risk: Float32Array; labels: Uint8Array }[];
  classWeights: Float64Array;
  /** The shuffle's seed, tokens per batch, steps in all and steps a call (`IndexFeeder`'s options). */
  seed: number;
  batch: number;
  steps: number;
  group: number;
  /** The learning rate of each step. */
  lr: Float64Array;
  loss: { labelSmoothing: number; reconWeight: number; focalGamma: number };
  adam: { weightDecay: number; clipNorm: number };
  /**
   * Shared: the steps wait, the set on the device and the first batch's indices drawn, until `gate[0]` is 1 (2:
   * return at once, nothing trained): a router prepared while the one before it on the card still trains.
   */
  gate?: Int32Array;
}

/** `StepsTask.gate`'s values. */
export const GATE = { wait: 0, go: 1, stop: 2 } as const;

/**
 * Blocks this thread while `gate` holds GATE.wait (another thread stores GATE.go or GATE.stop and notifies); throws
 * on GATE.stop. Returns the milliseconds waited (0 without a gate).
 */
export function passGate(gate: Int32Array | undefined): number {
  if (gate === undefined) return 0;
  const g0 = performance.now();
  while (Atomics.load(gate, 0) === GATE.wait) Atomics.wait(gate, 0, GATE.wait);
  if (Atomics.load(gate, 0) === GATE.stop) throw new Error("Expected the go-ahead for this router's steps but the router before it failed");
  return performance.now() - g0;
}

/** The trained parameters, each step's loss, cross-entropy, reconstruction and gradient norm (four numbers a step),
 * and where the calls' time went (ms in all). */
export interface StepsOutcome {
  params: Float32Array;
  history: Float64Array;
  calls: number;
  runMs: number;
  feedMs: number;
  setMs: number;
  /** Time waiting at the gate for the router before it (ms; 0 without a gate). */
  gateMs: number;
}

/** The fields of `StepsOutcome.history` for each step, in order. */
export const STEP_FIELDS = ['loss', 'ce', 'rec', 'gradNorm'] as const;

export default async function stepsTask(t: StepsTask): Promise<StepsOutcome> {
  const router = new NativeRouter({ hidden: t.hidden, backend: 'cuda' });
  try {
    router.setParams(t.params, 1);
    const s0 = performance.now();
    router.setTrainingSet(t.parts, t.classWeights);
    const setMs = performance.now() - s0;
    const count = t.parts.reduce((n, p) => n + p.vol.length, 0);
    const indices = new IndexFeeder(count, { seed: t.seed, batch: t.batch, steps: t.steps, group: t.group });
    const history = new Float64Array(STEP_FIELDS.length * t.steps);
    let calls = 0;
    let runMs = 0;
    let feedMs = 0;
    let gateMs = 0;
    try {
      gateMs = passGate(t.gate);
      for (let step = 0; step < t.steps; ) {
        const f0 = performance.now();
        const index = indices.nextSync();
        feedMs += performance.now() - f0;
        const k = index.length / t.batch;
        const out = router.trainStepsOnSetSync(index, t.loss, { ...t.adam, lr: Array.from(t.lr.subarray(step, step + k)) }, k);
        indices.release();
        calls += 1;
        runMs += out.timing?.[1] ?? 0;
        for (let j = 0; j < k; j++) {
          if (!Number.isFinite(out.loss[j]!)) throw new RangeError(`Expected finite loss at step ${step + j} but received ${out.loss[j]}`);
          STEP_FIELDS.forEach((f, i) => (history[STEP_FIELDS.length * (step + j) + i] = out[f][j]!));
        }
        step += k;
      }
    } finally {
      await indices.close();
    }
    const params = router.getParams();
    return movedResult({ params, history, calls, runMs, feedMs, setMs, gateMs }, [params, history]);
  } finally {
    router.close();
  }
}
