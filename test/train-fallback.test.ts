import { describe, expect, it, vi } from 'vitest';
import { initParams } from '../src/router/model.js';
import { NativeRouter, nativeAvailable } from '../src/router/native.js';
import { ReferenceTrainer } from '../src/training/train.js';
import { Rng } from '../src/util/random.js';

function batch(n: number, hidden: number, seed: number) {
  const rng = new Rng(seed);
  return {
    x: rng.fillNormal(new Float32Array(n * hidden)),
    vol: Float32Array.from({ length: n }, () => rng.uniform(0.001, 0.05)),
    risk: Float32Array.from({ length: n }, () => rng.uniform(0, 0.4)),
    labels: Uint8Array.from({ length: n }, () => rng.int(4)),
    weights: Float32Array.from({ length: n }, () => rng.uniform(0.5, 2)),
  };
}

const native = nativeAvailable();

describe('reference training fallback', () => {
  it('reduces the loss on a fixed batch with the TypeScript AdamW', async () => {
    const t = new ReferenceTrainer(16);
    t.setParams(initParams(16, 2));
    const b = batch(64, 16, 9);
    const opts = { labelSmoothing: 0.05, reconWeight: 0.1, sampleWeight: b.weights };
    const first = await t.lossAndGrad(b, b.labels, opts);
    let last = first;
    for (let s = 0; s < 40; s++) {
      t.adamwStep(last.grad, { lr: 1e-2, weightDecay: 0.01, clipNorm: 1 });
      last = await t.lossAndGrad(b, b.labels, opts);
    }
    expect(last.loss).toBeLessThan(first.loss * 0.8);
  });

  it.skipIf(!native.ok)('takes the same steps as the native router (loss, gradient, AdamW with clipping and decay)', async () => {
    const params = initParams(16, 5);
    const ref = new ReferenceTrainer(16);
    ref.setParams(params, 1.3);
    const nat = new NativeRouter({ hidden: 16, threads: 1 });
    nat.setParams(params, 1.3);
    try {
      const b = batch(256, 16, 11);
      const opts = { labelSmoothing: 0.05, reconWeight: 0.1, sampleWeight: b.weights };
      for (let s = 0; s < 5; s++) {
        const r = await ref.lossAndGrad(b, b.labels, opts);
        const n = await nat.lossAndGrad(b, b.labels, opts);
        expect(n.loss).toBeCloseTo(r.loss, 4);
        // Clip small so clipping is active on every step: both sides must scale the gradient alike.
        const step = { lr: 3e-3, weightDecay: 0.05, clipNorm: 0.05 };
        const rn = ref.adamwStep(r.grad, step);
        const nn = nat.adamwStep(r.grad, step);
        expect(nn).toBeCloseTo(rn, 4);
      }
      const a = ref.getParams();
      const c = nat.getParams();
      let maxDiff = 0;
      for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i]! - c[i]!));
      expect(maxDiff).toBeLessThan(1e-5);
      let moved = 0;
      for (let i = 0; i < a.length; i++) moved = Math.max(moved, Math.abs(a[i]! - params[i]!));
      expect(moved).toBeGreaterThan(1e-3);
    } finally {
      nat.close();
    }
  });
  it('falls back to the reference, with a warning naming the reason, when the addon is missing', async () => {
    const saved = process.env.MOE_NATIVE_PATH;
    process.env.MOE_NATIVE_PATH = '/nonexistent/moe_router.node';
    vi.resetModules();
    try {
      const { createTrainerBackend } = await import('../src/training/train.js');
      const warnings: string[] = [];
      const backend = createTrainerBackend(16, 1, (m) => warnings.push(m));
      expect(backend.backend).toBe('reference');
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/native router unavailable \(native addon not found at \/nonexistent\/moe_router\.node.*TypeScript reference/);
      backend.close();
    } finally {
      if (saved === undefined) delete process.env.MOE_NATIVE_PATH;
      else process.env.MOE_NATIVE_PATH = saved;
      vi.resetModules();
    }
  });

  if (!native.ok) it.skip(`native comparison skipped: ${native.reason}`, () => {});
});
