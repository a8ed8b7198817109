// Golden test: native scalar and SIMD forward against the float64 TS reference, on fresh seeded inputs,
// ragged batch sizes, sync and async, 1 and 2 threads.
import { describe, expect, it } from 'vitest';
import { randomBatch, randomParams } from './helpers/router.js';
import { paramLayout, type Hidden } from '../src/router/layout.js';
import { NativeRouter, cudaStatus, loadNativeAddon, nativeAvailable, pinnedBatch, sharedBatch, type ForwardOutput, type TokenBatch } from '../src/router/native.js';
import { referenceForward, referenceLossAndGrad, type ReferenceForwardOutput } from '../src/router/reference.js';
import { Rng } from '../src/util/random.js';

const available = nativeAvailable();
const suite = available.ok ? describe : describe.skip;
const suiteName = available.ok ? 'native router forward' : `native router forward (skipped: ${available.reason})`;

const SIZES = [1, 3, 15, 16, 17, 31, 33, 64, 65, 1000, 4099];

/** Routes `plain` copied into the in-place arrays `batch` / `out`: the results land in `out`, bit for bit those of
 * `forwardSync` on the ordinary arrays. */
async function expectInPlaceAsPlain(r: NativeRouter, plain: TokenBatch, batch: TokenBatch, out: ForwardOutput): Promise<void> {
  batch.x.set(plain.x);
  batch.vol.set(plain.vol);
  batch.risk.set(plain.risk);
  const want = r.forwardSync(plain, { expert: true });
  const got = await r.forward(batch, { expert: true, out });
  expect(got.probs).toBe(out.probs);
  expect(Buffer.from(got.probs.buffer).equals(Buffer.from(want.probs.buffer))).toBe(true);
  expect(Array.from(got.assign)).toEqual(Array.from(want.assign));
  expect(Buffer.from(got.expert!.buffer).equals(Buffer.from(want.expert!.buffer))).toBe(true);
}

/** Top-2 gap of the reference logits of token t; argmax may legitimately differ below 1e-5. */
function nearTie(ref: ReferenceForwardOutput, t: number): boolean {
  const z = Array.from(ref.logits.subarray(t * 4, t * 4 + 4)).sort((a, b) => b - a);
  return (z[0] as number) - (z[1] as number) < 1e-5;
}

interface Mismatch {
  what: string;
  index: number;
  got: number;
  want: number;
}

function compare(hidden: Hidden, ref: ReferenceForwardOutput, got: { probs: Float32Array; assign: Uint8Array; expert?: Float32Array }): Mismatch[] {
  const bad: Mismatch[] = [];
  const n = ref.assign.length;
  let scale = 0;
  for (const v of ref.expert) scale = Math.max(scale, Math.abs(v));
  for (let t = 0; t < n; t++) {
    for (let d = 0; d < 4; d++) {
      const i = t * 4 + d;
      const want = ref.probs[i] as number;
      if (!(Math.abs((got.probs[i] as number) - want) <= 1e-6 + 1e-5 * Math.abs(want))) {
        bad.push({ what: 'probs', index: i, got: got.probs[i] as number, want });
      }
    }
    if (nearTie(ref, t)) continue;
    if (got.assign[t] !== ref.assign[t]) {
      bad.push({ what: 'assign', index: t, got: got.assign[t] as number, want: ref.assign[t] as number });
      continue;
    }
    if (!got.expert) continue;
    for (let k = 0; k < hidden; k++) {
      const i = t * hidden + k;
      const want = ref.expert[i] as number;
      // Absolute part scaled by the largest output: y sums 2H products in float32, so cancellation near 0
      // leaves an error proportional to the size of the terms, not of the result.
      if (!(Math.abs((got.expert[i] as number) - want) <= 2e-6 * (1 + scale) + 1e-5 * Math.abs(want))) {
        bad.push({ what: 'expert', index: i, got: got.expert[i] as number, want });
      }
    }
  }
  return bad;
}

suite(suiteName, () => {
  for (const hidden of [16, 32] as const) {
    it(`matches the float64 reference for H=${hidden} on every backend, thread count and batch size`, async () => {
      const rng = new Rng(1000 + hidden);
      const params = randomParams(hidden, rng);
      const temperature = rng.uniform(0.6, 1.8);
      const routers = (['scalar', 'simd'] as const).flatMap((backend) =>
        [1, 2].map((threads) => {
          const router = new NativeRouter({ hidden, backend, threads });
          router.setParams(params, temperature);
          return { router, threads };
        }),
      );
      try {
        for (const n of SIZES) {
          const batch = randomBatch(hidden, n, rng);
          const ref = referenceForward(params, hidden, batch, temperature);
          for (const { router: r, threads } of routers) {
            const label = `${r.backend} threads=${threads} n=${n}`;
            const sync = r.forwardSync(batch, { expert: true });
            expect(compare(hidden, ref, sync).slice(0, 5), `${label} sync`).toEqual([]);
            const async = await r.forward(batch, { expert: true });
            expect(compare(hidden, ref, async).slice(0, 5), `${label} async`).toEqual([]);
            const noExpert = await r.forward(batch);
            expect(noExpert.expert).toBeUndefined();
            expect(noExpert.assign).toEqual(async.assign);
          }
        }
      } finally {
        for (const { router } of routers) router.close();
      }
    });
  }

  it('writes into caller-provided outputs when asked', async () => {
    const hidden = 16;
    const rng = new Rng(8);
    const r = new NativeRouter({ hidden, backend: 'simd' });
    r.setParams(randomParams(hidden, rng), 1);
    const batch = randomBatch(hidden, 50, rng);
    const out = { probs: new Float32Array(200), assign: new Uint8Array(50), expert: new Float32Array(800) };
    const got = await r.forward(batch, { expert: true, out });
    expect(got.probs).toBe(out.probs);
    expect(got.expert).toBe(out.expert);
    expect(got.probs).toEqual(r.forwardSync(batch).probs);
    expect(() => r.forwardSync(batch, { expert: true, out: { probs: out.probs, assign: out.assign } })).toThrow(
      new TypeError('Expected Float32Array of length 800 for options.out.expert but received undefined'),
    );
    r.close();
  });

  it('async forward works on a copy of its inputs: overwriting them right after the call changes nothing', async () => {
    const hidden = 16;
    const rng = new Rng(12);
    const r = new NativeRouter({ hidden, backend: 'scalar' });
    r.setParams(randomParams(hidden, rng), 1);
    const batch = randomBatch(hidden, 5000, rng);
    const want = r.forwardSync(batch, { expert: true });
    const pending = r.forward(batch, { expert: true });
    batch.x.fill(NaN);
    batch.vol.fill(3);
    batch.risk.fill(-3);
    const got = await pending;
    expect(got.probs).toEqual(want.probs);
    expect(got.assign).toEqual(want.assign);
    expect(got.expert).toEqual(want.expert);
    r.close();
  });

  it('routes arrays in SharedArrayBuffers in place, with the same results, and names a NaN or ±Inf input', async () => {
    const hidden = 32;
    const rng = new Rng(21);
    for (const backend of ['simd', 'scalar'] as const) {
      const r = new NativeRouter({ hidden, backend, threads: 2 });
      r.setParams(randomParams(hidden, rng), 0.8);
      const plain = randomBatch(hidden, 3001, rng);
      const { batch, out } = sharedBatch(3001, hidden, true);
      await expectInPlaceAsPlain(r, plain, batch, out);
      // The addon checks shared inputs itself, off the JS thread: the promise rejects naming the array and index.
      batch.x[7 * hidden + 3] = NaN;
      await expect(r.forward(batch, { expert: true, out })).rejects.toThrow(
        `Expected finite values for x but received NaN at index ${7 * hidden + 3}`,
      );
      batch.x[7 * hidden + 3] = 0;
      batch.risk[2999] = -Infinity;
      await expect(r.forward(batch, { out })).rejects.toThrow('Expected finite values for risk but received -Infinity at index 2999');
      // Shared inputs with ordinary outputs take the copying path, checked on the call as before.
      await expect(r.forward(batch)).rejects.toThrow(new RangeError('Expected finite values for batch.risk but received -Infinity at index 2999'));
      r.close();
    }
  });

  it('pinnedBatch: page-locked arrays where a GPU is usable (else shared ones), routed in place alike', async () => {
    const hidden = 16;
    const rng = new Rng(23);
    const gpu = cudaStatus().available;
    const addon = loadNativeAddon();
    const raw = addon.allocPinned(4096);
    if (gpu) expect(raw?.byteLength).toBe(4096);
    else expect(raw).toBeNull();
    expect(() => addon.allocPinned(0)).toThrow('Expected integer in [1, 2^40] for bytes but received 0');
    expect(() => (addon.allocPinned as (b: unknown) => unknown)('8')).toThrow(/for bytes but received/);
    expect(() => pinnedBatch(0, hidden)).toThrow(new RangeError('Expected integer ≥ 1 for n but received 0 of type number'));
    expect(() => pinnedBatch(4, 24 as 16)).toThrow(new RangeError('Expected 16 or 32 for hidden but received 24 of type number'));
    const r = new NativeRouter({ hidden, backend: 'auto', threads: 2 });
    r.setParams(randomParams(hidden, rng), 0.8);
    const plain = randomBatch(hidden, 5003, rng);
    const { batch, out, pinned } = pinnedBatch(5003, hidden, true);
    expect(pinned).toBe(gpu);
    expect(batch.x.buffer instanceof SharedArrayBuffer).toBe(!gpu);
    await expectInPlaceAsPlain(r, plain, batch, out);
    batch.vol[4001] = NaN;
    batch.x[5 * hidden] = Infinity;
    await expect(r.forward(batch, { expert: true, out })).rejects.toThrow(
      `Expected finite values for x but received Infinity at index ${5 * hidden}`,
    );
    batch.x[5 * hidden] = 0;
    await expect(r.forward(batch, { out })).rejects.toThrow('Expected finite values for vol but received NaN at index 4001');
    r.close();
  });

  it('AVX2 kernels (pinned through the raw addon) match the reference too', async () => {
    const addon = loadNativeAddon();
    if (addon.simdLevel() === '') return; // no SIMD on this CPU: nothing to pin
    for (const hidden of [16, 32] as const) {
      const rng = new Rng(600 + hidden);
      const params = randomParams(hidden, rng);
      const raw = new addon.Router(hidden, 'simd-avx2', 2);
      raw.setParams(params, 0.8);
      expect(raw.backendName()).toBe('simd-avx2');
      for (const n of [1, 7, 9, 65, 4099]) {
        const batch = randomBatch(hidden, n, rng);
        const got = { probs: new Float32Array(n * 4), assign: new Uint8Array(n), expert: new Float32Array(n * hidden) };
        raw.forwardSync(batch.x, batch.vol, batch.risk, got.probs, got.assign, got.expert);
        const ref = referenceForward(params, hidden, batch, 0.8);
        expect(compare(hidden, ref, got).slice(0, 5), `avx2 H=${hidden} n=${n}`).toEqual([]);
      }
      // The backward pass of this family too (same source, compiled with AVX2 flags).
      const batch = randomBatch(hidden, 300, rng);
      const labels = new Uint8Array(300).map(() => rng.int(4));
      const grad = new Float32Array(raw.paramCount());
      const loss = await raw.lossAndGrad(batch.x, batch.vol, batch.risk, labels, null, 0.1, 0.5, grad);
      const ref = referenceLossAndGrad(params, hidden, batch, labels, { labelSmoothing: 0.1, reconWeight: 0.5 }, 0.8);
      expect(loss.loss).toBeCloseTo(ref.loss, 5);
      let gmax = 0;
      for (const g of ref.grad) gmax = Math.max(gmax, Math.abs(g));
      for (let i = 0; i < grad.length; i++) {
        expect(Math.abs(grad[i]! - ref.grad[i]!)).toBeLessThanOrEqual(1e-6 * gmax + 1e-5 * Math.abs(ref.grad[i]!));
      }
      raw.close();
    }
  });

  it('reports the SIMD family picked by CPUID and keeps scalar on request', () => {
    const simd = new NativeRouter({ hidden: 16, backend: 'auto' });
    const scalar = new NativeRouter({ hidden: 16, backend: 'scalar' });
    expect(['simd-avx512', 'simd-avx2', 'scalar']).toContain(simd.backend);
    expect(scalar.backend).toBe('scalar');
    simd.close();
    scalar.close();
  });

  it('handles extreme logits: clipped, low temperature, ties resolved to the lowest index', () => {
    const hidden = 16;
    const L = paramLayout(hidden);
    const params = new Float32Array(L.size);
    // Only the base bias is non-zero: s = g0·bc, so z is the same for every token.
    params[L.byName.gates.offset] = 1;
    params.set([40, 40, -3, 2], L.byName.bc.offset); // domains 0 and 1 both clip at +15 → tie → 0
    const n = 37;
    const batch = randomBatch(hidden, n, new Rng(5));
    for (const backend of ['scalar', 'simd'] as const) {
      const r = new NativeRouter({ hidden, backend });
      r.setParams(params, 0.05);
      const out = r.forwardSync(batch, { expert: true });
      const ref = referenceForward(params, hidden, batch, 0.05);
      expect(Array.from(out.assign)).toEqual(new Array(n).fill(0));
      expect(compare(hidden, ref, out)).toEqual([]);
      for (const v of out.probs) expect(Number.isFinite(v)).toBe(true);
      r.close();
    }
  });

  it('gives identical results for tokens regardless of where they sit in the batch', () => {
    const hidden = 32;
    const rng = new Rng(77);
    const params = randomParams(hidden, rng);
    const r = new NativeRouter({ hidden, backend: 'simd', threads: 2 });
    r.setParams(params, 1);
    const batch = randomBatch(hidden, 300, rng);
    const whole = r.forwardSync(batch, { expert: true });
    const part = r.forwardSync(
      { x: batch.x.subarray(117 * hidden, 140 * hidden), vol: batch.vol.subarray(117, 140), risk: batch.risk.subarray(117, 140) },
      { expert: true },
    );
    expect(part.probs).toEqual(whole.probs.subarray(117 * 4, 140 * 4));
    expect(part.expert).toEqual(whole.expert!.subarray(117 * hidden, 140 * hidden));
    r.close();
  });
});
