/**
 * An ensemble of routers: K members trained alike from different seeds, whose probabilities are averaged. Single
 * trainings of the same recipe differ by several points on the development folder's slices (one ticker is one point)
 * and in which tickers they miss; the average misses fewer and travels further (models/README.md).
 *
 * Each member routes at temperature 1; the ensemble's probabilities are `softmax(ln p̄ / T)` of the members' mean p̄,
 * and the model's history temperature re-tempers them after that as for one router. A model of one member routes
 * exactly as before: at T inside the native forward. Either way the routing decision is the argmax of the
 * probabilities returned.
 */
import { NUM_DOMAINS as D } from '../domains.js';
import type { Hidden } from './layout.js';
import { NativeRouter, type RouterOptions, type TokenBatch } from './native.js';
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
  if (outs.length === 0) throw new RangeError('Expected at least one member output but received none');
  const len = outs[0]!.length;
  for (const o of outs) {
    if (o.length !== len) throw new RangeError(`Expected member outputs of one length (${len}) but received ${o.length}`);
  }
  const n = len / D;
  const probs = new Float32Array(len);
  const assign = new Uint8Array(n);
  const row = new Float64Array(D);
  for (let i = 0; i < n; i++) {
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
  return { probs, assign };
}

/** The native routers of a model's members, behind one forward. */
export class EnsembleRouter {
  readonly hidden: Hidden;
  readonly backend: string;
  readonly fallbackReason: string | null;
  readonly members: number;
  private readonly routers: NativeRouter[];
  private readonly temperature: number;

  constructor(members: readonly Float32Array[], temperature: number, opts: RouterOptions) {
    if (members.length === 0) throw new RangeError('Expected at least one member for an ensemble router but received none');
    this.routers = [];
    try {
      for (const params of members) {
        const r = new NativeRouter(opts);
        this.routers.push(r);
        // One member routes at T as it always has; members of an ensemble at 1, T applies to their mean.
        r.setParams(params, members.length === 1 ? temperature : 1);
      }
    } catch (err) {
      this.close();
      throw err;
    }
    const first = this.routers[0]!;
    this.hidden = first.hidden;
    this.backend = first.backend;
    this.fallbackReason = first.fallbackReason;
    this.members = members.length;
    this.temperature = temperature;
  }

  async forward(batch: TokenBatch): Promise<EnsembleOutput> {
    if (this.routers.length === 1) {
      const out = await this.routers[0]!.forward(batch);
      return { probs: out.probs, assign: out.assign };
    }
    // One member after another: each already spreads a batch over its threads (or the GPU).
    const outs: Float32Array[] = [];
    for (const r of this.routers) outs.push((await r.forward(batch)).probs);
    return averageMembers(outs, this.temperature);
  }

  close(): void {
    for (const r of this.routers.splice(0)) r.close();
  }
}
