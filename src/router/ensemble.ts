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
import type { Hidden } from './layout.js';
import { NativeRouter, type RouterOptions, type TokenBatch } from './native.js';

export { averageMemberRows, averageMembers, memberRows, type EnsembleOutput } from './ensemble-mean.js';
import { averageMembers, type EnsembleOutput } from './ensemble-mean.js';

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
