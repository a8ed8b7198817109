import type { Hidden } from '../router/layout.js';
import { nativeAvailable } from '../router/native.js';
import { EnsembleRouter, averageMembers } from '../router/ensemble.js';
import { referenceForward } from '../router/reference.js';
import { temperBatchByHistory } from '../router/history-temperature.js';

/**
 * What training, evaluation, calibration and the rules baseline route with: the native router when the addon is
 * built, else the float64 TypeScript reference (slow, same math), or the rules (rules.ts) behind the same shape.
 */


export interface RouteOutput {
  probs: Float32Array;
  assign: Uint8Array;
}

export interface Forwarder {
  readonly backend: string;
  forward(x: Float32Array, vol: Float32Array, risk: Float32Array): Promise<RouteOutput>;
  close(): void;
}

export function createForwarder(
  model: { hidden: Hidden; params: Float32Array; members?: readonly Float32Array[]; temperature: number; historyTemperature?: number; contextTemperature?: number },
  opts: { threads?: number; warn?: (message: string) => void } = {},
): Forwarder {
  const scalars = { historyTemperature: model.historyTemperature ?? 0, contextTemperature: model.contextTemperature ?? 0 };
  const members = model.members ?? [model.params];
  const tempered = (x: Float32Array, out: RouteOutput): RouteOutput => ({ probs: temperBatchByHistory(out.probs, x, model.hidden, scalars), assign: out.assign });
  const available = nativeAvailable();
  if (available.ok) {
    const router = new EnsembleRouter(members, model.temperature, { hidden: model.hidden, threads: opts.threads ?? 2 });
    return {
      backend: router.backend,
      forward: async (x, vol, risk) => tempered(x, await router.forward({ x, vol, risk })),
      close: () => router.close(),
    };
  }
  opts.warn?.(`native router unavailable (${available.reason}); using the TypeScript reference (slow)`);
  return {
    backend: 'reference',
    forward: async (x, vol, risk) => {
      if (members.length === 1) {
        const out = referenceForward(members[0]!, model.hidden, { x, vol, risk }, model.temperature);
        return tempered(x, { probs: Float32Array.from(out.probs), assign: out.assign });
      }
      const outs = members.map((p) => Float32Array.from(referenceForward(p, model.hidden, { x, vol, risk }, 1).probs));
      return tempered(x, averageMembers(outs, model.temperature));
    },
    close: () => undefined,
  };
}
