/**
 * Why a ticker went where it went: occlusion against the neutral token. Every feature is normalised so that 0 is its
 * training centre (docs/features.md), so "feature k at 0" means "nothing unusual about k". For a ticker's mean token
 * x̄ (with its mean vol and risk) and its chosen domain d, the effect of feature k is
 *
 *   effect_k = ln p_d(x̄) − ln p_d(x̄ with x_k = 0)
 *
 * the log-probability of d that k's departure from its centre brings. Positive effects pushed the ticker towards d.
 * One forward call routes the (H + 1) tokens of every ticker together, on whatever backend the caller holds.
 */

/** One reason: a feature, its normalised value in the ticker's mean token, and its effect on ln p(domain). */
export interface FeatureReason {
  feature: string;
  value: number;
  effect: number;
}

export interface AttributionInput {
  /** Mean token of the ticker over its routed days, `hidden` values. */
  x: Float32Array;
  vol: number;
  risk: number;
  /** Domain index the ticker was routed to. */
  domain: number;
}

import { NUM_DOMAINS as D } from '../domains.js';

export type Forward = (batch: { x: Float32Array; vol: Float32Array; risk: Float32Array }) => Promise<{ probs: Float32Array }>;

/** A probability floor for the logarithm: a softmax output of exactly 0 (float32 underflow) is still finite here. */
const P_FLOOR = 1e-30;

/** Mean token of `days` tokens of width `hidden` starting at token `start` of a concatenated batch. */
export function meanToken(x: Float32Array, hidden: number, start: number, days: number): Float32Array {
  const out = new Float32Array(hidden);
  if (days === 0) return out;
  const acc = new Float64Array(hidden);
  for (let i = start; i < start + days; i++) for (let k = 0; k < hidden; k++) acc[k]! += x[i * hidden + k]!;
  for (let k = 0; k < hidden; k++) out[k] = acc[k]! / days;
  return out;
}

/** A ticker's mean token, vol and risk over its `days` tokens from `start` of a concatenated batch. */
export function meanInput(
  batch: { x: Float32Array; vol: Float32Array; risk: Float32Array },
  hidden: number,
  start: number,
  days: number,
): Omit<AttributionInput, 'domain'> {
  return { x: meanToken(batch.x, hidden, start, days), vol: meanToken(batch.vol, 1, start, days)[0]!, risk: meanToken(batch.risk, 1, start, days)[0]! };
}

/**
 * Effects of every feature for every ticker (`effects[i][k]`), from one forward call of `items.length × (hidden + 1)`
 * tokens: each ticker's mean token, then that token with one feature set to 0 at a time.
 */
export async function featureEffects(forward: Forward, hidden: number, items: readonly AttributionInput[]): Promise<Float64Array[]> {
  const per = hidden + 1;
  const n = items.length * per;
  const x = new Float32Array(n * hidden);
  const vol = new Float32Array(n);
  const risk = new Float32Array(n);
  items.forEach((it, i) => {
    for (let j = 0; j < per; j++) {
      const row = i * per + j;
      x.set(it.x, row * hidden);
      if (j > 0) x[row * hidden + (j - 1)] = 0;
      vol[row] = it.vol;
      risk[row] = it.risk;
    }
  });
  const { probs } = n > 0 ? await forward({ x, vol, risk }) : { probs: new Float32Array(0) };
  return items.map((it, i) => {
    const lp = (j: number) => Math.log(Math.max(P_FLOOR, probs[(i * per + j) * D + it.domain]!));
    const base = lp(0);
    const eff = new Float64Array(hidden);
    for (let k = 0; k < hidden; k++) eff[k] = base - lp(k + 1);
    return eff;
  });
}

/** The `top` features with the largest positive effects, largest first (fewer when fewer pushed towards the domain). */
export function topReasons(effects: Float64Array, x: Float32Array, names: readonly string[], top = 3): FeatureReason[] {
  return Array.from(effects, (effect, k) => ({ feature: names[k] ?? `f${k}`, value: x[k]!, effect }))
    .filter((r) => r.effect > 0)
    .sort((a, b) => b.effect - a.effect)
    .slice(0, top)
    .map((r) => ({ feature: r.feature, value: Math.round(r.value * 100) / 100, effect: Math.round(r.effect * 1000) / 1000 }));
}
