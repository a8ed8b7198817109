// Gradients and optimizer: the TS reference's analytic gradient against central finite differences of its own
// float64 loss, every native backend's gradient against the reference, and the native AdamW step against a
// float64 TypeScript transcription of the AdamW update in docs/router.md.
import { describe, expect, it } from 'vitest';
import { INITIAL_GATES, TENSOR_NAMES, paramLayout, type Hidden } from '../src/router/layout.js';
import { NativeRouter, nativeAvailable } from '../src/router/native.js';
import { referenceLossAndGrad, type ReferenceLossOptions } from '../src/router/reference.js';
import { Rng } from '../src/util/random.js';

function randomParams(hidden: Hidden, rng: Rng, scale = 0.3): Float64Array {
  const L = paramLayout(hidden);
  const p = new Float64Array(L.size);
  for (let i = 0; i < p.length; i++) p[i] = Math.fround(rng.normal() * scale);
  INITIAL_GATES.forEach((g, i) => (p[L.byName.gates.offset + i] = Math.fround(g)));
  return p;
}

function randomInputs(hidden: Hidden, n: number, rng: Rng) {
  const f32 = (len: number, s: number): Float32Array => rng.fillNormal(new Float32Array(len), s);
  const batch = { x: f32(n * hidden, 1), vol: f32(n, 0.7), risk: f32(n, 1) };
  const labels = new Uint8Array(n).map(() => rng.int(4));
  const sampleWeight = new Float32Array(n).map(() => rng.uniform(0.2, 2));
  return { batch, labels, sampleWeight };
}

describe('reference gradient', () => {
  for (const hidden of [16, 32] as const) {
    it(`matches central finite differences for every tensor (H=${hidden})`, () => {
      const rng = new Rng(31 + hidden);
      const params = randomParams(hidden, rng);
      const { batch, labels, sampleWeight } = randomInputs(hidden, 6, rng);
      const opts: ReferenceLossOptions = { labelSmoothing: 0.1, reconWeight: 0.7, sampleWeight };
      const T = 1.3;
      const { grad } = referenceLossAndGrad(params, hidden, batch, labels, opts, T);
      const L = paramLayout(hidden);
      const h = 1e-6;
      let checked = 0;
      let nonZero = 0;
      for (const name of TENSOR_NAMES) {
        const t = L.byName[name];
        const picks = new Set<number>();
        while (picks.size < Math.min(t.size, 12)) picks.add(t.offset + rng.int(t.size));
        for (const i of picks) {
          const p = Float64Array.from(params);
          p[i] = params[i]! + h;
          const up = referenceLossAndGrad(p, hidden, batch, labels, opts, T).loss;
          p[i] = params[i]! - h;
          const down = referenceLossAndGrad(p, hidden, batch, labels, opts, T).loss;
          const fd = (up - down) / (2 * h);
          const an = grad[i]!;
          expect(Math.abs(fd - an), `${name}[${i - t.offset}] fd=${fd} analytic=${an}`).toBeLessThanOrEqual(
            1e-7 + 1e-5 * Math.abs(an),
          );
          checked++;
          if (an !== 0) nonZero++;
        }
      }
      expect(checked).toBeGreaterThan(100);
      // Most picked entries must carry gradient, or the check would prove nothing.
      expect(nonZero).toBeGreaterThan(checked * 0.6);
    });
  }

  it('scales the cross-entropy by sample weights and leaves rec unweighted', () => {
    const hidden = 16;
    const rng = new Rng(9);
    const params = randomParams(hidden, rng);
    const { batch, labels } = randomInputs(hidden, 5, rng);
    const one = referenceLossAndGrad(params, hidden, batch, labels, { reconWeight: 0.5 }, 1);
    const two = referenceLossAndGrad(params, hidden, batch, labels, { reconWeight: 0.5, sampleWeight: new Float32Array(5).fill(2) }, 1);
    expect(two.ce).toBeCloseTo(2 * one.ce, 12);
    expect(two.rec).toBeCloseTo(one.rec, 12);
    expect(two.loss).toBeCloseTo(2 * one.ce + 0.5 * one.rec, 12);
  });
});

const available = nativeAvailable();
const suite = available.ok ? describe : describe.skip;
const suiteName = available.ok ? 'native gradient and AdamW' : `native gradient and AdamW (skipped: ${available.reason})`;

suite(suiteName, () => {
  for (const hidden of [16, 32] as const) {
    it(`loss and gradient match the reference on every backend (H=${hidden})`, async () => {
      const rng = new Rng(400 + hidden);
      const params = Float32Array.from(randomParams(hidden, rng));
      for (const n of [1, 17, 1000, 4099]) {
        const { batch, labels, sampleWeight } = randomInputs(hidden, n, rng);
        const opts = { labelSmoothing: 0.05, reconWeight: 0.3, sampleWeight };
        const ref = referenceLossAndGrad(params, hidden, batch, labels, opts, 0.9);
        let gmax = 0;
        for (const g of ref.grad) gmax = Math.max(gmax, Math.abs(g));
        for (const backend of ['scalar', 'simd'] as const) {
          for (const threads of [1, 2]) {
            const r = new NativeRouter({ hidden, backend, threads });
            r.setParams(params, 0.9);
            const got = await r.lossAndGrad(batch, labels, opts);
            const label = `${r.backend} threads=${threads} n=${n}`;
            expect(got.loss, label).toBeCloseTo(ref.loss, 5);
            expect(got.ce, label).toBeCloseTo(ref.ce, 5);
            expect(got.rec, label).toBeCloseTo(ref.rec, 5);
            let worst = 0;
            for (let i = 0; i < ref.grad.length; i++) {
              const err = Math.abs(got.grad[i]! - ref.grad[i]!) / (1e-6 * gmax + 1e-5 * Math.abs(ref.grad[i]!));
              worst = Math.max(worst, err);
            }
            expect(worst, `${label}: worst gradient error in units of tolerance`).toBeLessThanOrEqual(1);
            r.close();
          }
        }
      }
    });
  }

  it('defaults: no smoothing, no reconstruction, unit weights', async () => {
    const hidden = 16;
    const rng = new Rng(12);
    const params = Float32Array.from(randomParams(hidden, rng));
    const { batch, labels } = randomInputs(hidden, 40, rng);
    const r = new NativeRouter({ hidden });
    r.setParams(params, 1);
    const got = await r.lossAndGrad(batch, labels);
    const ref = referenceLossAndGrad(params, hidden, batch, labels, {}, 1);
    expect(got.loss).toBeCloseTo(ref.loss, 6);
    expect(got.rec).toBeCloseTo(ref.rec, 5);
    // λ = 0: the experts get no gradient.
    const L = paramLayout(hidden);
    expect(got.grad.subarray(L.byName.We.offset).every((v) => v === 0)).toBe(true);
    r.close();
  });

  it('AdamW steps match a float64 transcription of the update, with clipping and decay only on matrices', () => {
    const hidden = 16;
    const L = paramLayout(hidden);
    const rng = new Rng(77);
    const p0 = Float32Array.from(randomParams(hidden, rng));
    const r = new NativeRouter({ hidden });
    r.setParams(p0, 1);
    const opts = { lr: 0.01, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.1, clipNorm: 2 };
    const decay = new Uint8Array(L.size);
    for (const t of L.tensors) if (t.decay) decay.fill(1, t.offset, t.offset + t.size);
    const p = Float64Array.from(p0);
    const m = new Float64Array(L.size);
    const v = new Float64Array(L.size);
    for (let step = 1; step <= 4; step++) {
      // Step 2 has a large gradient so clipping engages; the others stay below the clip norm.
      const g = rng.fillNormal(new Float32Array(L.size), step === 2 ? 1 : 0.005);
      let sq = 0;
      for (const x of g) sq += x * x;
      const norm = Math.sqrt(sq);
      const scale = norm > opts.clipNorm ? opts.clipNorm / norm : 1;
      if (step === 2) expect(scale).toBeLessThan(1);
      for (let i = 0; i < L.size; i++) {
        const gi = g[i]! * scale;
        m[i] = opts.beta1 * m[i]! + (1 - opts.beta1) * gi;
        v[i] = opts.beta2 * v[i]! + (1 - opts.beta2) * gi * gi;
        const mh = m[i]! / (1 - opts.beta1 ** step);
        const vh = v[i]! / (1 - opts.beta2 ** step);
        p[i] = p[i]! - opts.lr * (mh / (Math.sqrt(vh) + opts.eps) + opts.weightDecay * p[i]! * decay[i]!);
      }
      const gotNorm = r.adamwStep(g, opts);
      expect(gotNorm).toBeCloseTo(norm, 4);
    }
    const got = r.getParams();
    for (let i = 0; i < L.size; i++) {
      expect(Math.abs(got[i]! - p[i]!), `param ${i}`).toBeLessThanOrEqual(1e-6 + 1e-5 * Math.abs(p[i]!));
    }
    // Biases moved only by the Adam term: with a zero gradient and decay on, a bias stays, a matrix shrinks.
    r.setParams(got, 1);
    r.adamwStep(new Float32Array(L.size), { lr: 0.1, weightDecay: 0.5 });
    const after = r.getParams();
    const w1 = L.byName.W1.offset;
    const b1 = L.byName.b1.offset;
    expect(after[b1]).toBe(got[b1]);
    expect(after[w1]).toBeCloseTo(got[w1]! * (1 - 0.1 * 0.5), 6);
    r.close();
  });

  it('setParams resets the optimizer; resetOptimizer restarts the bias correction', () => {
    const hidden = 16;
    const L = paramLayout(hidden);
    const p0 = Float32Array.from(randomParams(hidden, new Rng(3)));
    const g = new Rng(4).fillNormal(new Float32Array(L.size), 0.01);
    const opts = { lr: 0.01, weightDecay: 0, clipNorm: 0 };
    const a = new NativeRouter({ hidden });
    a.setParams(p0);
    a.adamwStep(g, opts);
    const first = a.getParams();
    a.setParams(p0);
    a.adamwStep(g, opts);
    expect(a.getParams()).toEqual(first);
    a.setParams(p0);
    a.adamwStep(g, opts);
    a.resetOptimizer();
    const again = new NativeRouter({ hidden });
    again.setParams(a.getParams());
    a.adamwStep(g, opts);
    again.adamwStep(g, opts);
    expect(a.getParams()).toEqual(again.getParams());
    a.close();
    again.close();
  });
});
