import { describe, expect, it } from 'vitest';
import { computeFeatures } from '../src/data/features/compute.js';
import { FEATURE_TABLE } from '../src/data/features/table.js';
import { simulateBars, simulateContext } from '../src/data/sim/simulator.js';
import { domainIndex } from '../src/domains.js';
import { featureEffects, meanInput, topReasons, type AttributionInput } from '../src/router/attribution.js';
import { loadModel } from '../src/router/model.js';
import { NativeRouter, nativeAvailable } from '../src/router/native.js';
import { referenceForward } from '../src/router/reference.js';

/**
 * The attribution's check: the native router and the float64 reference give the same effects for the same tokens,
 * a feature already at its centre has no effect, and the reasons are the largest positive effects.
 */

const native = nativeAvailable();
const names = FEATURE_TABLE.map((f) => f.name);

async function inputs(hidden: 16 | 32): Promise<AttributionInput[]> {
  const days = 400;
  const context = simulateContext(5, days);
  const specs = [
    { ticker: 'VXX', spec: { class: 'Derivatives' as const, subtype: 'volatility-long' } },
    { ticker: 'TLT', spec: { class: 'Fixed Income' as const, subtype: 'treasury-long' } },
    { ticker: 'GLD', spec: { class: 'Commodities' as const, subtype: 'precious-metals' } },
    { ticker: 'AAPL', spec: { class: 'Equities' as const, subtype: 'stock' } },
  ];
  return specs.map(({ ticker, spec }, i) => {
    const f = computeFeatures(ticker, simulateBars(ticker, spec, days, 5), hidden, context);
    const mean = meanInput(f, hidden, 0, f.vol.length);
    if (i === 0) mean.x[3] = 0; // one feature exactly at its centre
    return { ...mean, domain: domainIndex(spec.class) };
  });
}

describe.skipIf(!native.ok)('route attribution (occlusion against the neutral token)', () => {
  it('gives the same effects on the native router as on the float64 reference, and 0 for a feature at its centre', async () => {
    const model = await loadModel();
    const H = model.hidden;
    const items = await inputs(H);
    const router = new NativeRouter({ hidden: H });
    try {
      router.setParams(model.params, model.temperature);
      const fromNative = await featureEffects((b) => router.forward(b), H, items);
      const fromReference = await featureEffects(
        async (b) => ({ probs: Float32Array.from(referenceForward(model.params, H, b, model.temperature).probs) }),
        H,
        items,
      );
      for (let i = 0; i < items.length; i++) {
        expect(fromNative[i]!.length).toBe(H);
        for (let k = 0; k < H; k++) expect(Math.abs(fromNative[i]![k]! - fromReference[i]![k]!)).toBeLessThan(2e-3);
      }
      expect(fromNative[0]![3]).toBe(0);
      for (let i = 0; i < items.length; i++) {
        const reasons = topReasons(fromNative[i]!, items[i]!.x, names);
        const positive = Array.from(fromNative[i]!).filter((e) => e > 0).sort((a, b) => b - a);
        expect(reasons.map((r) => r.effect)).toEqual(positive.slice(0, 3).map((e) => Math.round(e * 1000) / 1000));
        for (const r of reasons) expect(names).toContain(r.feature);
      }
    } finally {
      router.close();
    }
  });

  it('keeps no reason when no feature raised the chosen domain', () => {
    expect(topReasons(Float64Array.from([-0.2, 0, -1]), Float32Array.from([1, 2, 3]), ['a', 'b', 'c'])).toEqual([]);
    expect(topReasons(Float64Array.from([0.5, 2, -1, 1]), Float32Array.from([1.234, -2.5, 3, 0.5]), ['a', 'b', 'c', 'd'])).toEqual([
      { feature: 'b', value: -2.5, effect: 2 },
      { feature: 'd', value: 0.5, effect: 1 },
      { feature: 'a', value: 1.23, effect: 0.5 },
    ]);
  });
});

if (!native.ok) {
  describe('route attribution', () => {
    it.skip(`skipped: native router unavailable (${native.reason})`, () => {});
  });
}
