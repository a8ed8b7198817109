/**
 * Piscina task of the trainer's feature work on a real labelled folder, off the calling thread (whose turn the GPU's
 * training calls wait for): one slice of the folder (`loadLabelledDirectory`, crossfit.ts) or one ticker's training
 * rows (`tickerRows`, real-tokens.ts). The same features as computed in place, bit for bit.
 */
import type { Hidden } from '../router/layout.js';
import { sharedCopy } from '../util/shared-memory.js';
import { movedResult } from '../util/task-pool.js';
import { EvaluationError, loadLabelledDirectory, type LabelledBarsOptions, type LabelledDirectory } from './evaluate.js';
import { tickerRows, type Row, type TickerRowsArgs } from './real-tokens.js';

export type FeaturesTask =
  | { kind: 'slice'; opts: Omit<LabelledBarsOptions, 'warn'>; hidden: Hidden }
  | { kind: 'rows'; args: TickerRowsArgs };

/** A slice, or the EvaluationError that made it fail (its code does not survive the thread boundary as an Error). */
export type SliceOutcome = { dir: LabelledDirectory } | { error: { code: EvaluationError['code']; message: string } };

export default async function featuresTask(task: FeaturesTask): Promise<SliceOutcome | Row[]> {
  if (task.kind === 'rows') {
    // The rows' tokens go to the caller in shared memory (the training set's chunks, which the threads that train on
    // it read as they are), their dates and returns move (rows that share a series share its arrays).
    const rows = tickerRows(task.args);
    const shared = new Map<ArrayBufferView, ArrayBufferView>();
    const share = <T extends Float32Array>(a: T): T => {
      let s = shared.get(a);
      if (s === undefined) shared.set(a, (s = sharedCopy(a)));
      return s as T;
    };
    const out = rows.map((r) => ({ ...r, series: { ...r.series, x: share(r.series.x), vol: share(r.series.vol), risk: share(r.series.risk) } }));
    return movedResult(out, out.flatMap(({ series: s }) => [s.dates, s.ret]));
  }
  try {
    return { dir: await loadLabelledDirectory(task.opts, task.hidden) };
  } catch (e) {
    if (e instanceof EvaluationError) return { error: { code: e.code, message: e.message } };
    throw e;
  }
}
