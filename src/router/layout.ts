/**
 * Parameter layout of the router: one flat float32 vector shared by every backend (TS reference, native scalar,
 * SIMD, CUDA) and by the model file. Tensors are row-major and appear in this order.
 *
 * | name  | shape      | meaning                                          |
 * | ----- | ---------- | ------------------------------------------------ |
 * | W1    | [H, F]     | embedding → hidden, `h = relu(x·W1 + b1)`         |
 * | b1    | [F]        |                                                  |
 * | Wc    | [F, D]     | base signal `h·Wc + bc`                           |
 * | bc    | [D]        |                                                  |
 * | Wv    | [8, D]     | volatility signal `mean_j relu(vol·Wv[j,d] + Bv[j,d])` |
 * | Bv    | [8, D]     |                                                  |
 * | Wr    | [8, D]     | risk signal, likewise                            |
 * | Br    | [8, D]     |                                                  |
 * | Ws    | [3, 12, D] | stats signal `mean_j relu(Σ_s stats[s]·Ws[s,j,d] + Bs[j,d])` |
 * | Bs    | [12, D]    |                                                  |
 * | gates | [4]        | g0..g3 (base, vol, risk, stats)                   |
 * | We    | [D, F, H]  | expert `y = We[a]ᵀ·h + be[a]`: `y[k] = Σ_f h[f]·We[a,f,k] + be[a,k]` |
 * | be    | [D, H]     |                                                  |
 *
 * F = 2H, D = 4. The temperature `T` is not a trained parameter: it is fitted afterwards and passed separately.
 */
import { SUPPORTED_HIDDEN, isSupportedHidden, type Hidden } from '../data/types.js';

// The token's width is the feature function's choice (src/data); the router's layout follows it.
export { SUPPORTED_HIDDEN, isSupportedHidden, type Hidden };

export const D = 4;
export const VOL_UNITS = 8;
export const RISK_UNITS = 8;
export const STAT_UNITS = 12;
export const NUM_STATS = 3;
/** Initial gates (base, vol, risk, stats). */
export const INITIAL_GATES = [1.2, 1.0, 0.8, 0.6] as const;
/** Logits are clipped to ±CLIP before division by the temperature. */
export const LOGIT_CLIP = 15;

export const TENSOR_NAMES = ['W1', 'b1', 'Wc', 'bc', 'Wv', 'Bv', 'Wr', 'Br', 'Ws', 'Bs', 'gates', 'We', 'be'] as const;
export type TensorName = (typeof TENSOR_NAMES)[number];

export interface TensorSpec {
  name: TensorName;
  shape: number[];
  offset: number;
  size: number;
  /** Weight decay applies to matrices, not to biases and gates. */
  decay: boolean;
}

export interface ParamLayout {
  hidden: Hidden;
  features: number;
  tensors: TensorSpec[];
  byName: Record<TensorName, TensorSpec>;
  /** Total number of float32 parameters. */
  size: number;
}

export function paramLayout(hidden: Hidden): ParamLayout {
  if (!isSupportedHidden(hidden)) {
    throw new RangeError(`Expected hidden size 16 or 32 for hidden but received ${String(hidden)}`);
  }
  const H = hidden;
  const F = 2 * H;
  const shapes: Record<TensorName, [number[], boolean]> = {
    W1: [[H, F], true],
    b1: [[F], false],
    Wc: [[F, D], true],
    bc: [[D], false],
    Wv: [[VOL_UNITS, D], true],
    Bv: [[VOL_UNITS, D], false],
    Wr: [[RISK_UNITS, D], true],
    Br: [[RISK_UNITS, D], false],
    Ws: [[NUM_STATS, STAT_UNITS, D], true],
    Bs: [[STAT_UNITS, D], false],
    gates: [[4], false],
    We: [[D, F, H], true],
    be: [[D, H], false],
  };
  const tensors: TensorSpec[] = [];
  let offset = 0;
  for (const name of TENSOR_NAMES) {
    const [shape, decay] = shapes[name];
    const size = shape.reduce((a, b) => a * b, 1);
    tensors.push({ name, shape, offset, size, decay });
    offset += size;
  }
  const byName = Object.fromEntries(tensors.map((t) => [t.name, t])) as Record<TensorName, TensorSpec>;
  return { hidden: H, features: F, tensors, byName, size: offset };
}
