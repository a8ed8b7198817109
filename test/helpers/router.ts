import { INITIAL_GATES, paramLayout, type Hidden } from '../../src/router/layout.js';
import type { TokenBatch } from '../../src/router/native.js';
import type { Rng } from '../../src/util/random.js';

/** Random router parameters (normal, σ 0.3) with the initial gates, so every expert path is exercised. */
export function randomParams(hidden: Hidden, rng: Rng): Float32Array {
  const L = paramLayout(hidden);
  const p = rng.fillNormal(new Float32Array(L.size), 0.3);
  INITIAL_GATES.forEach((g, i) => (p[L.byName.gates.offset + i] = g));
  return p;
}

/** A random batch of `n` tokens: normal embeddings, volatility and risk spread across the routing thresholds. */
export function randomBatch(hidden: Hidden, n: number, rng: Rng): TokenBatch {
  return {
    x: rng.fillNormal(new Float32Array(n * hidden)),
    vol: rng.fillNormal(new Float32Array(n), 0.7),
    risk: rng.fillNormal(new Float32Array(n)),
  };
}
