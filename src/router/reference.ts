/**
 * Float64 TypeScript reference of the router: forward pass and loss + analytic gradient, written to read like
 * the math in the design document. Tests tie every native backend to it; training can fall back to it (slowly)
 * when the addon is not built.
 */
import { D, LOGIT_CLIP, NUM_STATS, RISK_UNITS, STAT_UNITS, VOL_UNITS, paramLayout, type Hidden } from './layout.js';

/** Inputs of n tokens; Float32Array or Float64Array (finite-difference checks use float64 throughout). */
export interface ReferenceBatch {
  /** n·H embeddings, row-major. */
  x: ArrayLike<number>;
  /** n daily volatilities. */
  vol: ArrayLike<number>;
  /** n risk scalars. */
  risk: ArrayLike<number>;
}

export interface ReferenceForwardOutput {
  /** n·4 values z = clip(s, ±15) / T, the softmax inputs. */
  logits: Float64Array;
  /** n·4 softmax probabilities. */
  probs: Float64Array;
  /** n chosen experts (argmax z, ties → lowest index). */
  assign: Uint8Array;
  /** n·H activated expert outputs. */
  expert: Float64Array;
}

export interface ReferenceLossOptions {
  /** Label smoothing ε in [0, 1). @defaultValue 0 */
  labelSmoothing?: number;
  /** Weight λ of the expert reconstruction loss. @defaultValue 0 */
  reconWeight?: number;
  /** Per-token weight of the cross-entropy (detached). @defaultValue all 1 */
  sampleWeight?: ArrayLike<number>;
}

export interface ReferenceLossResult {
  loss: number;
  ce: number;
  rec: number;
  /** Mean gradient over the batch, in the flat parameter layout. */
  grad: Float64Array;
}

/** Everything the backward pass needs about one token. */
interface TokenState {
  x: number[];
  pre1: Float64Array;
  h: Float64Array;
  stats: [number, number, number];
  base: number[];
  volPre: Float64Array;
  riskPre: Float64Array;
  statPre: Float64Array;
  volS: number[];
  riskS: number[];
  statS: number[];
  s: number[];
  z: number[];
  p: number[];
  assign: number;
  y: Float64Array;
  out: Float64Array;
}

const relu = (v: number): number => (v > 0 ? v : 0);

function tokenCount(hidden: Hidden, batch: ReferenceBatch): number {
  const n = batch.vol.length;
  if (batch.x.length !== n * hidden || batch.risk.length !== n) {
    throw new RangeError(
      `Expected x of length ${n * hidden} and risk of length ${n} for batch but received x of length ${batch.x.length} and risk of length ${batch.risk.length}`,
    );
  }
  return n;
}

function forwardToken(
  p: ArrayLike<number>,
  hidden: Hidden,
  batch: ReferenceBatch,
  n: number,
  temperature: number,
): TokenState {
  const L = paramLayout(hidden);
  const H = hidden;
  const F = 2 * H;
  const o = (name: keyof typeof L.byName): number => L.byName[name].offset;
  const w = (i: number): number => p[i] as number;
  const x = Array.from({ length: H }, (_, i) => batch.x[n * H + i] as number);

  const pre1 = new Float64Array(F);
  const h = new Float64Array(F);
  for (let f = 0; f < F; f++) {
    let acc = w(o('b1') + f);
    for (let i = 0; i < H; i++) acc += (x[i] as number) * w(o('W1') + i * F + f);
    pre1[f] = acc;
    h[f] = relu(acc);
  }
  const mean = x.reduce((a, v) => a + v, 0) / H;
  const variance = x.reduce((a, v) => a + (v - mean) * (v - mean), 0) / H;
  const absMean = x.reduce((a, v) => a + Math.abs(v), 0) / H;
  const stats: [number, number, number] = [mean, variance, absMean];

  const vol = batch.vol[n] as number;
  const risk = batch.risk[n] as number;
  const volPre = new Float64Array(VOL_UNITS * D);
  const riskPre = new Float64Array(RISK_UNITS * D);
  const statPre = new Float64Array(STAT_UNITS * D);
  const base: number[] = [];
  const volS: number[] = [];
  const riskS: number[] = [];
  const statS: number[] = [];
  const s: number[] = [];
  const z: number[] = [];
  const g = [0, 1, 2, 3].map((k) => w(o('gates') + k));
  for (let d = 0; d < D; d++) {
    let b = w(o('bc') + d);
    for (let f = 0; f < F; f++) b += (h[f] as number) * w(o('Wc') + f * D + d);
    let vs = 0;
    let rs = 0;
    for (let j = 0; j < VOL_UNITS; j++) {
      volPre[j * D + d] = vol * w(o('Wv') + j * D + d) + w(o('Bv') + j * D + d);
      vs += relu(volPre[j * D + d] as number);
    }
    for (let j = 0; j < RISK_UNITS; j++) {
      riskPre[j * D + d] = risk * w(o('Wr') + j * D + d) + w(o('Br') + j * D + d);
      rs += relu(riskPre[j * D + d] as number);
    }
    let ss = 0;
    for (let j = 0; j < STAT_UNITS; j++) {
      let a = w(o('Bs') + j * D + d);
      for (let k = 0; k < NUM_STATS; k++) a += stats[k]! * w(o('Ws') + (k * STAT_UNITS + j) * D + d);
      statPre[j * D + d] = a;
      ss += relu(a);
    }
    base.push(b);
    volS.push(vs / VOL_UNITS);
    riskS.push(rs / RISK_UNITS);
    statS.push(ss / STAT_UNITS);
    const sd = g[0]! * b + g[1]! * volS[d]! + g[2]! * riskS[d]! + g[3]! * statS[d]!;
    s.push(sd);
    z.push(Math.min(Math.max(sd, -LOGIT_CLIP), LOGIT_CLIP) / temperature);
  }
  let assign = 0;
  for (let d = 1; d < D; d++) if (z[d]! > z[assign]!) assign = d;
  const zmax = z[assign]!;
  const e = z.map((v) => Math.exp(v - zmax));
  const sum = e.reduce((a, v) => a + v, 0);
  const prob = e.map((v) => v / sum);

  const y = new Float64Array(H);
  const out = new Float64Array(H);
  for (let k = 0; k < H; k++) {
    let acc = w(o('be') + assign * H + k);
    for (let f = 0; f < F; f++) acc += (h[f] as number) * w(o('We') + (assign * F + f) * H + k);
    y[k] = acc;
    out[k] = assign === 3 ? Math.tanh(acc) : assign === 1 ? 0.8 * acc : relu(acc);
  }
  return { x, pre1, h, stats, base, volPre, riskPre, statPre, volS, riskS, statS, s, z, p: prob, assign, y, out };
}

/** Forward pass of every token (the router math of docs/router.md). */
export function referenceForward(
  params: ArrayLike<number>,
  hidden: Hidden,
  batch: ReferenceBatch,
  temperature: number,
): ReferenceForwardOutput {
  const n = tokenCount(hidden, batch);
  const logits = new Float64Array(n * D);
  const probs = new Float64Array(n * D);
  const assign = new Uint8Array(n);
  const expert = new Float64Array(n * hidden);
  for (let t = 0; t < n; t++) {
    const st = forwardToken(params, hidden, batch, t, temperature);
    for (let d = 0; d < D; d++) {
      logits[t * D + d] = st.z[d]!;
      probs[t * D + d] = st.p[d]!;
    }
    assign[t] = st.assign;
    expert.set(st.out, t * hidden);
  }
  return { logits, probs, assign, expert };
}

/**
 * L = (1/N) Σ_n (w_n·CE_n + λ·rec_n) and its gradient with respect to every parameter.
 * relu'(0) = 0, clip' = 1 only strictly inside (−15, 15); the argmax choice of expert is a constant.
 */
export function referenceLossAndGrad(
  params: ArrayLike<number>,
  hidden: Hidden,
  batch: ReferenceBatch,
  labels: ArrayLike<number>,
  opts: ReferenceLossOptions,
  temperature: number,
): ReferenceLossResult {
  const N = tokenCount(hidden, batch);
  const L = paramLayout(hidden);
  const H = hidden;
  const F = 2 * H;
  const o = (name: keyof typeof L.byName): number => L.byName[name].offset;
  const w = (i: number): number => params[i] as number;
  const eps = opts.labelSmoothing ?? 0;
  const lam = opts.reconWeight ?? 0;
  const grad = new Float64Array(L.size);
  let ceSum = 0;
  let recSum = 0;
  let lossSum = 0;
  const g = [0, 1, 2, 3].map((k) => w(o('gates') + k));

  for (let n = 0; n < N; n++) {
    const st = forwardToken(params, hidden, batch, n, temperature);
    const c = labels[n] as number;
    const wn = opts.sampleWeight ? (opts.sampleWeight[n] as number) : 1;
    const zmax = Math.max(...st.z);
    const logSum = Math.log(st.z.reduce((a, v) => a + Math.exp(v - zmax), 0));
    let ce = 0;
    const dz: number[] = [];
    for (let d = 0; d < D; d++) {
      const q = (d === c ? 1 - eps : 0) + eps / D;
      ce -= q * (st.z[d]! - zmax - logSum);
      dz.push((wn * (st.p[d]! - q)) / N);
    }
    let rec = 0;
    for (let k = 0; k < H; k++) rec += (st.out[k]! - st.x[k]!) ** 2;
    rec /= H;
    ceSum += wn * ce;
    recSum += rec;
    lossSum += wn * ce + lam * rec;

    const dh = new Float64Array(F);
    // Reconstruction: d(λ·rec/N)/d out_k = λ·2(out_k − x_k)/(H·N), through the expert's activation.
    const a = st.assign;
    for (let k = 0; k < H; k++) {
      const dout = (lam * 2 * (st.out[k]! - st.x[k]!)) / (H * N);
      const yk = st.y[k]!;
      const act = a === 3 ? 1 - st.out[k]! ** 2 : a === 1 ? 0.8 : yk > 0 ? 1 : 0;
      const dy = dout * act;
      grad[o('be') + a * H + k]! += dy;
      for (let f = 0; f < F; f++) {
        grad[o('We') + (a * F + f) * H + k]! += st.h[f]! * dy;
        dh[f]! += w(o('We') + (a * F + f) * H + k) * dy;
      }
    }
    // Cross-entropy through clip and the gates.
    const ds = dz.map((v, d) => (st.s[d]! > -LOGIT_CLIP && st.s[d]! < LOGIT_CLIP ? v / temperature : 0));
    for (let d = 0; d < D; d++) {
      grad[o('gates') + 0]! += ds[d]! * st.base[d]!;
      grad[o('gates') + 1]! += ds[d]! * st.volS[d]!;
      grad[o('gates') + 2]! += ds[d]! * st.riskS[d]!;
      grad[o('gates') + 3]! += ds[d]! * st.statS[d]!;
      const dBase = g[0]! * ds[d]!;
      grad[o('bc') + d]! += dBase;
      for (let f = 0; f < F; f++) {
        grad[o('Wc') + f * D + d]! += st.h[f]! * dBase;
        dh[f]! += w(o('Wc') + f * D + d) * dBase;
      }
      const dVol = (g[1]! * ds[d]!) / VOL_UNITS;
      const dRisk = (g[2]! * ds[d]!) / RISK_UNITS;
      const dStat = (g[3]! * ds[d]!) / STAT_UNITS;
      for (let j = 0; j < VOL_UNITS; j++) {
        if (st.volPre[j * D + d]! > 0) {
          grad[o('Wv') + j * D + d]! += (batch.vol[n] as number) * dVol;
          grad[o('Bv') + j * D + d]! += dVol;
        }
      }
      for (let j = 0; j < RISK_UNITS; j++) {
        if (st.riskPre[j * D + d]! > 0) {
          grad[o('Wr') + j * D + d]! += (batch.risk[n] as number) * dRisk;
          grad[o('Br') + j * D + d]! += dRisk;
        }
      }
      for (let j = 0; j < STAT_UNITS; j++) {
        if (!(st.statPre[j * D + d]! > 0)) continue;
        grad[o('Bs') + j * D + d]! += dStat;
        for (let k = 0; k < NUM_STATS; k++) grad[o('Ws') + (k * STAT_UNITS + j) * D + d]! += st.stats[k]! * dStat;
      }
    }
    // First layer.
    for (let f = 0; f < F; f++) {
      const dp = st.pre1[f]! > 0 ? dh[f]! : 0;
      if (dp === 0) continue;
      grad[o('b1') + f]! += dp;
      for (let i = 0; i < H; i++) grad[o('W1') + i * F + f]! += st.x[i]! * dp;
    }
  }
  return { loss: lossSum / N, ce: ceSum / N, rec: recSum / N, grad };
}
