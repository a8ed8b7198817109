// CUDA backend selection. Without a usable GPU (CI): 'auto' falls back to the CPU and says why, 'cuda' is a clear
// error, never a crash. With a GPU: the CUDA backend against the scalar oracle (forward, gradient, AdamW).
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { randomBatch, randomParams } from './helpers/router.js';
import { DEFAULT_MODEL_FILE, routerBackendChoice } from '../src/config.js';
import { NativeRouter, RouterError, cudaStatus, loadNativeAddon, nativeAvailable } from '../src/router/native.js';
import { Rng } from '../src/util/random.js';
import { openRouter } from '../workers/route.js';

const available = nativeAvailable();
const gpu = cudaStatus();
const native = available.ok ? describe : describe.skip;
const noGpu = available.ok && !gpu.available ? describe : describe.skip;
const withGpu = available.ok && gpu.available ? describe : describe.skip;

native('CUDA status of the addon', () => {
  it('reports whether CUDA is built in and, when no GPU is usable, why', () => {
    expect(typeof gpu.built).toBe('boolean');
    if (gpu.available) {
      expect(gpu.reason).toBeNull();
      expect(gpu.device).toMatch(/sm_\d+/);
    } else {
      expect(gpu.reason).toMatch(/\w/);
      expect(gpu.device).toBeNull();
    }
  });

  it('has the CUDA backend built in wherever nvcc was on the PATH at build time', () => {
    const nvcc = spawnSync('nvcc', ['--version'], { encoding: 'utf8' });
    if (nvcc.status === 0) expect(gpu.built).toBe(true);
    if (!gpu.built) expect(gpu.reason).toMatch(/built without CUDA/);
  });

  it('maps MOE_BACKEND onto the router choice', () => {
    expect(routerBackendChoice('auto')).toBe('auto');
    expect(routerBackendChoice('cpu')).toBe('simd');
    expect(routerBackendChoice('cuda')).toBe('cuda');
  });

  it('reports no fallback when a CPU backend is asked for explicitly', () => {
    const r = new NativeRouter({ hidden: 16, backend: 'simd' });
    try {
      expect(r.backend).toMatch(/^simd-/);
      expect(r.fallbackReason).toBeNull();
      expect(r.device).toBeNull();
    } finally {
      r.close();
    }
  });
});

noGpu(`no usable GPU (${gpu.reason ?? ''})`, () => {
  it("'auto' runs on the CPU and says why", () => {
    for (const hidden of [16, 32] as const) {
      const r = new NativeRouter({ hidden });
      try {
        expect(r.backend).not.toBe('cuda');
        expect(r.fallbackReason).toBe(gpu.reason);
        expect(r.device).toBeNull();
        const out = r.forwardSync(randomBatch(hidden, 5, new Rng(1)));
        expect(out.assign).toHaveLength(5);
      } finally {
        r.close();
      }
    }
  });

  it('trainSteps needs the CUDA backend: checked arguments first, then a clear error (never a crash)', async () => {
    const r = new NativeRouter({ hidden: 16, backend: 'simd' });
    try {
      expect(r.trainStepsSupported).toBe(false);
      const rng = new Rng(3);
      const batch = randomBatch(16, 4, rng);
      const labels = new Uint8Array([0, 1, 2, 3]);
      await expect(r.trainSteps(batch, labels, { focalGamma: -1 }, { lr: 1e-3 })).rejects.toThrow(
        'Expected finite number >= 0 for options.focalGamma but received -1',
      );
      await expect(r.trainSteps(batch, new Uint8Array([0, 1, 2, 4]), {}, { lr: 1e-3 })).rejects.toThrow(/labels/);
      await expect(r.trainSteps(batch, labels, {}, { lr: 1e-3 }, 3)).rejects.toThrow(
        "Expected an integer ≥ 1 dividing the batch's 4 tokens for steps but received 3",
      );
      await expect(r.trainSteps(batch, labels, {}, { lr: [1e-3] }, 2)).rejects.toThrow('Expected 2 learning rates for options.lr but received 1');
      await expect(r.trainSteps(batch, labels, {}, { lr: [1e-3, 0] }, 2)).rejects.toThrow(
        'Expected finite numbers > 0 for options.lr but received 0 at index 1',
      );
      await expect(r.trainSteps(batch, labels, {}, { lr: 1e-3 }, 2)).rejects.toThrow(
        /trainSteps needs the CUDA backend but this router runs on simd-\w+; use lossAndGrad and adamwStep/,
      );
      // The addon itself checks too, and throws rather than crashes.
      const addon = loadNativeAddon();
      const raw = new addon.Router(16, 'simd', 1);
      expect(() => raw.trainSteps(batch.x, batch.vol, batch.risk, labels, null, 0, 0, 0, new Float32Array([1e-3]), 0.9, 0.999, 1e-8, 0, 1)).toThrow(
        /trainSteps needs the CUDA backend/,
      );
      raw.close();
      // Nothing changed, and the router still trains the separate way.
      expect(Array.from(r.getParams()).every((v) => v === 0)).toBe(true);
      const g = await r.lossAndGrad(batch, labels, {});
      expect(Number.isFinite(r.adamwStep(g.grad, { lr: 1e-3 }))).toBe(true);
    } finally {
      r.close();
    }
  });

  it('setTrainingSet and trainStepsOnSet need the CUDA backend: checked arguments first, then a clear error', async () => {
    const r = new NativeRouter({ hidden: 16, backend: 'simd' });
    try {
      const batch = randomBatch(16, 4, new Rng(5));
      const labels = new Uint8Array([0, 1, 2, 3]);
      expect(() => r.setTrainingSet({ ...batch, labels: new Uint8Array(3) }, [1, 1, 1, 1])).toThrow(/labels/);
      expect(() => r.setTrainingSet({ ...batch, labels }, [1, 1, 1])).toThrow('Expected 4 class weights for classWeights but received 3');
      // A set in parts: each part checked and named.
      expect(() => r.setTrainingSet([], [1, 1, 1, 1])).toThrow('Expected at least one part for set but received an empty array');
      expect(() => r.setTrainingSet([{ ...batch, labels }, { ...batch, labels: new Uint8Array(3) }], [1, 1, 1, 1])).toThrow(
        'Expected Uint8Array of length 4 for set[1].labels but received Uint8Array of length 3',
      );
      expect(() => r.setTrainingSet([{ ...batch, labels }, { ...batch, risk: new Float32Array(2), labels }], [1, 1, 1, 1])).toThrow(
        'Expected Float32Array of length 4 for set[1].risk but received Float32Array of length 2',
      );
      expect(() => r.setTrainingSet({ ...batch, labels }, [1, 1, 1, 1])).toThrow(
        /setTrainingSet needs the CUDA backend but this router runs on simd-\w+; use lossAndGrad and adamwStep/,
      );
      await expect(r.trainStepsOnSet([0, 1] as unknown as Uint32Array, {}, { lr: 1e-3 })).rejects.toThrow(
        'Expected Uint32Array for index but received array of length 2',
      );
      await expect(r.trainStepsOnSet(new Uint32Array(4), {}, { lr: 1e-3 }, 3)).rejects.toThrow(
        "Expected an integer ≥ 1 dividing the batch's 4 tokens for steps but received 3",
      );
      await expect(r.trainStepsOnSet(new Uint32Array(4), { reconWeight: -1 }, { lr: 1e-3 })).rejects.toThrow(
        'Expected finite number >= 0 for options.reconWeight but received -1',
      );
      await expect(r.trainStepsOnSet(new Uint32Array(4), {}, { lr: 1e-3 }, 2)).rejects.toThrow(/trainStepsOnSet needs the CUDA backend/);
      // The variant that waits on the calling thread checks the same and throws the same.
      expect(() => r.trainStepsOnSetSync(new Uint32Array(4), {}, { lr: 1e-3 }, 3)).toThrow(
        "Expected an integer ≥ 1 dividing the batch's 4 tokens for steps but received 3",
      );
      expect(() => r.trainStepsOnSetSync(new Uint32Array(4), {}, { lr: 1e-3 }, 2)).toThrow(/trainStepsOnSet needs the CUDA backend/);
      const raw = new (loadNativeAddon().Router)(16, 'simd', 1);
      expect(() => raw.setTrainingSet([{ ...batch, labels }], new Float32Array(4))).toThrow(/setTrainingSet needs the CUDA backend/);
      expect(() => raw.trainStepsOnSet(new Uint32Array(4), 0, 0, 0, new Float32Array([1e-3]), 0.9, 0.999, 1e-8, 0, 1)).toThrow(
        /trainStepsOnSet needs the CUDA backend/,
      );
      raw.close();
    } finally {
      r.close();
    }
  });

  it("'cuda' is a clear error naming the reason", () => {
    let err: unknown;
    try {
      new NativeRouter({ hidden: 16, backend: 'cuda' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RouterError);
    expect((err as RouterError).code).toBe('BACKEND_UNAVAILABLE');
    expect((err as RouterError).message).toBe(`Expected a usable CUDA device for backend 'cuda' but ${gpu.reason}`);
  });

  it("the addon itself throws (never crashes) for 'cuda'", () => {
    const addon = loadNativeAddon();
    expect(() => new addon.Router(32, 'cuda', 1)).toThrow(/Expected a usable CUDA device for backend 'cuda' but /);
  });

  it('a route worker configured with MOE_BACKEND=cuda refuses to start; auto starts on the CPU', async () => {
    await expect(openRouter(DEFAULT_MODEL_FILE, 'cuda')).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
    const { router } = await openRouter(DEFAULT_MODEL_FILE, 'auto');
    try {
      expect(router.backend).not.toBe('cuda');
      expect(router.fallbackReason).toBe(gpu.reason);
    } finally {
      router.close();
    }
  });
});

// The forward's products: fp32 kernels with MOE_CUDA_PRECISION=fp32 (the oracle's 1e-5 relative), else the
// tensor-core precisions' contract (bf16x3 by default: probabilities within 2e-3; docs/performance.md).
const fp32 = process.env.MOE_CUDA_PRECISION === 'fp32';

withGpu(`CUDA backend on ${gpu.device ?? ''}`, () => {
  for (const hidden of [16, 32] as const) {
    it(`forward, gradient and AdamW match the scalar oracle, H=${hidden}`, async () => {
      const rng = new Rng(77 + hidden);
      const params = randomParams(hidden, rng);
      const cuda = new NativeRouter({ hidden, backend: 'cuda' });
      const ref = new NativeRouter({ hidden, backend: 'scalar', threads: 2 });
      try {
        expect(cuda.backend).toBe('cuda');
        for (const r of [cuda, ref]) r.setParams(params, 0.9);
        for (const n of [1, 31, 1000, 4099]) {
          const batch = randomBatch(hidden, n, rng);
          const a = await cuda.forward(batch, { expert: true });
          const b = await ref.forward(batch, { expert: true });
          for (let i = 0; i < n * 4; i++) {
            const want = b.probs[i] as number;
            expect(Math.abs((a.probs[i] as number) - want)).toBeLessThanOrEqual(fp32 ? 1e-9 + 1e-5 * want : 2e-3);
          }
          const labels = new Uint8Array(n).map(() => rng.int(4));
          const ga = await cuda.lossAndGrad(batch, labels, { labelSmoothing: 0.1, reconWeight: 0.5 });
          const gb = await ref.lossAndGrad(batch, labels, { labelSmoothing: 0.1, reconWeight: 0.5 });
          expect(Math.abs(ga.loss - gb.loss)).toBeLessThanOrEqual(1e-5 * Math.abs(gb.loss));
          let gmax = 0;
          for (const v of gb.grad) gmax = Math.max(gmax, Math.abs(v));
          for (let i = 0; i < gb.grad.length; i++) {
            expect(Math.abs((ga.grad[i] as number) - (gb.grad[i] as number))).toBeLessThanOrEqual(1e-5 * gmax + 1e-4 * Math.abs(gb.grad[i] as number));
          }
          const na = cuda.adamwStep(gb.grad, { lr: 1e-2, clipNorm: 0.5 });
          const nb = ref.adamwStep(gb.grad, { lr: 1e-2, clipNorm: 0.5 });
          expect(Math.abs(na - nb)).toBeLessThanOrEqual(1e-9 * nb);
          const pa = cuda.getParams();
          const pb = ref.getParams();
          for (let i = 0; i < pa.length; i++) {
            expect(Math.abs((pa[i] as number) - (pb[i] as number))).toBeLessThanOrEqual(1e-6 + 1e-5 * Math.abs(pb[i] as number));
          }
        }
      } finally {
        cuda.close();
        ref.close();
      }
    });

    it(`trainSteps equals lossAndGrad then adamwStep bit for bit, and blocks other updates while it runs, H=${hidden}`, async () => {
      const rng = new Rng(91 + hidden);
      const params = randomParams(hidden, rng);
      const fused = new NativeRouter({ hidden, backend: 'cuda' });
      const split = new NativeRouter({ hidden, backend: 'cuda' });
      try {
        expect(fused.trainStepsSupported).toBe(true);
        for (const r of [fused, split]) r.setParams(params, 1);
        const opts = { labelSmoothing: 0.05, reconWeight: 0.1 };
        const adam = { clipNorm: 1, weightDecay: 0.01 };
        for (const [n, steps] of [[33, 1], [4096, 4]] as const) {
          const batch = randomBatch(hidden, n * steps, rng);
          const labels = new Uint8Array(n * steps).map(() => rng.int(4));
          const sampleWeight = new Float32Array(n * steps).map(() => 0.5 + rng.next());
          const lr = Array.from({ length: steps }, (_, k) => 5e-3 / (k + 1));
          const pending = fused.trainSteps(batch, labels, { ...opts, sampleWeight }, { ...adam, lr }, steps);
          expect(() => fused.setParams(params, 1)).toThrow(/trainSteps call of this Router is still running/);
          const a = await pending;
          for (let k = 0; k < steps; k++) {
            const part = <T extends Float32Array | Uint8Array>(v: T, w: number) => v.subarray(k * n * w, (k + 1) * n * w) as T;
            const b = { x: part(batch.x, hidden), vol: part(batch.vol, 1), risk: part(batch.risk, 1) };
            const g = await split.lossAndGrad(b, part(labels, 1), { ...opts, sampleWeight: part(sampleWeight, 1) });
            const norm = split.adamwStep(g.grad, { ...adam, lr: lr[k]! });
            expect([a.loss[k], a.ce[k], a.rec[k], a.gradNorm[k]]).toEqual([g.loss, g.ce, g.rec, norm]);
          }
          expect(Buffer.from(fused.getParams().buffer).equals(Buffer.from(split.getParams().buffer))).toBe(true);
        }
      } finally {
        fused.close();
        split.close();
      }
    });

    it(`trainStepsOnSet equals trainSteps on the same batches gathered on the host, bit for bit; bad sets and indices are named, H=${hidden}`, async () => {
      const rng = new Rng(71 + hidden);
      const params = randomParams(hidden, rng);
      const onSet = new NativeRouter({ hidden, backend: 'cuda' });
      const host = new NativeRouter({ hidden, backend: 'cuda' });
      try {
        for (const r of [onSet, host]) r.setParams(params, 1);
        const S = 3000;
        const set = { ...randomBatch(hidden, S, rng), labels: new Uint8Array(S).map(() => rng.int(4)) };
        const cw = [0.7, 1.3, 2.1, 0.9];
        await expect(onSet.trainStepsOnSet(new Uint32Array(4), {}, { lr: 1e-3 })).rejects.toThrow(/needs a training set: call setTrainingSet first/);
        const bad = { ...set, vol: set.vol.slice() };
        bad.vol[17] = Number.NaN;
        expect(() => onSet.setTrainingSet(bad, cw)).toThrow('Expected finite values for vol but received NaN at index 17');
        expect(() => onSet.setTrainingSet({ ...set, labels: set.labels.map((l, i) => (i === 5 ? 4 : l)) }, cw)).toThrow(
          'Expected values in 0..3 for labels but received 4 at index 5',
        );
        // Another set first (replaced), then this one in two parts, as the trainer sends simulated and real tokens.
        onSet.setTrainingSet({ ...set, x: set.x.map(() => 9) }, cw);
        const cut = 1100;
        const rows = (from: number, to: number) => ({
          x: set.x.subarray(from * hidden, to * hidden),
          vol: set.vol.subarray(from, to),
          risk: set.risk.subarray(from, to),
          labels: set.labels.subarray(from, to),
        });
        const twoBad = rows(cut, S);
        expect(() => onSet.setTrainingSet([rows(0, cut), { ...twoBad, risk: twoBad.risk.map((v, i) => (i === 3 ? Infinity : v)) }], cw)).toThrow(
          'Expected finite values for parts[1].risk but received Infinity at index 3',
        );
        onSet.setTrainingSet([rows(0, cut), rows(cut, S)], cw);
        const steps = 4;
        const n = 1024;
        const index = new Uint32Array(n * steps).map(() => rng.int(S));
        await expect(onSet.trainStepsOnSet(index.map((v, i) => (i === 9 ? S : v)), {}, { lr: 1e-3 })).rejects.toThrow(
          `Expected indices below the training set's ${S} tokens for index but received ${S} at index 9`,
        );
        const batch = { x: new Float32Array(n * steps * hidden), vol: new Float32Array(n * steps), risk: new Float32Array(n * steps) };
        const labels = new Uint8Array(n * steps);
        const sampleWeight = new Float32Array(n * steps);
        index.forEach((t, i) => {
          batch.x.set(set.x.subarray(t * hidden, (t + 1) * hidden), i * hidden);
          batch.vol[i] = set.vol[t]!;
          batch.risk[i] = set.risk[t]!;
          labels[i] = set.labels[t]!;
          sampleWeight[i] = cw[set.labels[t]!]!;
        });
        const opts = { labelSmoothing: 0.05, reconWeight: 0.1, focalGamma: 1 };
        const adam = { clipNorm: 1, weightDecay: 0.01, lr: [5e-3, 4e-3, 3e-3, 2e-3] };
        const a = await onSet.trainStepsOnSet(index, opts, adam, steps);
        const b = await host.trainSteps(batch, labels, { ...opts, sampleWeight }, adam, steps);
        for (const k of ['loss', 'ce', 'rec', 'gradNorm'] as const) expect(Array.from(a[k])).toEqual(Array.from(b[k]));
        expect(Buffer.from(onSet.getParams().buffer).equals(Buffer.from(host.getParams().buffer))).toBe(true);
        // The same call waited for on this thread: the same steps again, bit for bit, from the same state.
        const twin = new NativeRouter({ hidden, backend: 'cuda' });
        try {
          twin.setParams(params, 1);
          twin.setTrainingSet([rows(0, cut), rows(cut, S)], cw);
          const c = twin.trainStepsOnSetSync(index, opts, adam, steps);
          for (const k of ['loss', 'ce', 'rec', 'gradNorm'] as const) expect(Array.from(c[k])).toEqual(Array.from(a[k]));
          expect(Buffer.from(twin.getParams().buffer).equals(Buffer.from(onSet.getParams().buffer))).toBe(true);
          expect(c.timing![1]).toBeGreaterThan(0);
          expect(() => twin.trainStepsOnSetSync(index.map((v, i) => (i === 9 ? S : v)), {}, { lr: 1e-3 })).toThrow(
            `Expected indices below the training set's ${S} tokens for index but received ${S} at index 9`,
          );
        } finally {
          twin.close();
        }
        // Each call says where its time went: waiting for a pool thread, then running.
        for (const t of [a.timing!, b.timing!]) {
          expect(t).toHaveLength(2);
          expect(t[0]).toBeGreaterThanOrEqual(0);
          expect(t[1]).toBeGreaterThan(0);
        }
      } finally {
        onSet.close();
        host.close();
      }
    });
  }
});
