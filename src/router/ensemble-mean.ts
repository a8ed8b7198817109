/**
 * An ensemble's mean probabilities read at one temperature (src/router/ensemble.ts), apart from the native routers so
 * that worker threads (src/training/calibrate.task.ts) can average held-out outputs without loading them.
 */
import { NUM_DOMAINS as D } from '../domains.js';
import { temperRow } from './history-temperature.js';

export interface EnsembleOutput {
  probs: Float32Array;
  assign: Uint8Array;
}

/**
 * `softmax(ln p̄ / temperature)` of the mean of `outs` (row-major `[n, 4]` probabilities of each member at T = 1),
 * with its argmax (the first of equal maxima, as the native router's).
 */
export function averageMembers(outs: readonly Float32Array[], temperature: number): EnsembleOutput {
  const n = memberRows(outs);
  const out = { probs: new Float32Array(n * D), assign: new Uint8Array(n) };
  averageMemberRows(outs, temperature, out, 0, n);
  return out;
}

/** The rows each of `outs` holds (one length for all), checked. */
export function memberRows(outs: readonly Float32Array[]): number {
  if (outs.length === 0) throw new RangeError('Expected at least one member output but received none');
  const len = outs[0]!.length;
  for (const o of outs) {
    if (o.length !== len) throw new RangeError(`Expected member outputs of one length (${len}) but received ${o.length}`);
  }
  return len / D;
}

/**
 * `averageMembers` of rows [from, to) only, written into `out` (of all the rows): each row depends on its own inputs
 * alone, so rows split over threads give the whole's bytes.
 */
export function averageMemberRows(outs: readonly Float32Array[], temperature: number, out: EnsembleOutput, from: number, to: number): void {
  const { probs, assign } = out;
  const row = new Float64Array(D);
  for (let i = from; i < to; i++) {
    for (let d = 0; d < D; d++) {
      let s = 0;
      for (const o of outs) s += o[i * D + d]!;
      row[d] = s / outs.length;
    }
    temperRow(row, 1 / temperature);
    let best = 0;
    for (let d = 0; d < D; d++) {
      probs[i * D + d] = row[d]!;
      if (probs[i * D + d]! > probs[i * D + best]!) best = d;
    }
    assign[i] = best;
  }
}

