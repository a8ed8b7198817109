// Garbage numbers are refused, never answered quietly: NaN/±Inf tokens (which used to route to Equities with
// uniform probabilities), a NaN gradient (which used to turn every parameter into NaN), a temperature outside
// [TEMPERATURE_MIN, TEMPERATURE_MAX] (1e-300 used to zero every probability). Checked at the TypeScript layer and
// again at the raw addon boundary, with the same message shape.
import { describe, expect, it } from 'vitest';
import { randomBatch, randomParams } from './helpers/router.js';
import { saveModel } from '../src/router/model.js';
import {
  NativeRouter,
  TEMPERATURE_MAX,
  TEMPERATURE_MIN,
  firstNonFinite,
  loadNativeAddon,
  nativeAvailable,
  type TokenBatch,
} from '../src/router/native.js';
import { Rng } from '../src/util/random.js';

const available = nativeAvailable();
const suite = available.ok ? describe : describe.skip;
const suiteName = available.ok ? 'router: non-finite inputs and temperature range' : `router: non-finite inputs and temperature range (skipped: ${available.reason})`;

const H = 16;
const n = 40;

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a throw');
}

describe('firstNonFinite', () => {
  it('finds the first NaN or ±Inf in any block and passes every finite float32', () => {
    const a = new Float32Array(3 * 4096 + 17).fill(1);
    expect(firstNonFinite(a)).toBe(-1);
    // The largest float32 values sum in float64 without overflowing; -0, subnormals and float32 max are finite.
    a.fill(3.4028234663852886e38, 0, 5000);
    a[6000] = -0;
    a[6001] = 1e-45;
    a[6002] = -3.4028234663852886e38;
    expect(firstNonFinite(a)).toBe(-1);
    for (const [i, v] of [[0, NaN], [4095, Infinity], [4096, -Infinity], [3 * 4096 + 16, NaN], [9000, NaN]] as const) {
      const b = a.slice();
      b[i] = v;
      if (i !== 9000) b[9000] = NaN; // a later bad value must not hide the first
      expect(firstNonFinite(b), `bad value at ${i}`).toBe(Math.min(i, 9000));
    }
    // +Inf and -Inf in one block sum to NaN: still caught.
    const c = new Float32Array(100);
    c[10] = Infinity;
    c[11] = -Infinity;
    expect(firstNonFinite(c)).toBe(10);
    expect(firstNonFinite(new Float32Array(0))).toBe(-1);
  });
});

suite(suiteName, () => {
  const rng = new Rng(99);
  const params = randomParams(H, rng);
  const clean = randomBatch(H, n, rng);
  const labels = new Uint8Array(n).map(() => rng.int(4));
  const spoil = (name: keyof TokenBatch, index: number, value: number): TokenBatch => {
    const b = { x: clean.x.slice(), vol: clean.vol.slice(), risk: clean.risk.slice() };
    b[name][index] = value;
    return b;
  };

  describe('TypeScript layer', () => {
    const cases: [keyof TokenBatch, number, number, string][] = [
      ['x', 17, NaN, 'Expected finite values for batch.x but received NaN at index 17'],
      ['x', 639, Infinity, 'Expected finite values for batch.x but received Infinity at index 639'],
      ['vol', 0, -Infinity, 'Expected finite values for batch.vol but received -Infinity at index 0'],
      ['risk', 39, NaN, 'Expected finite values for batch.risk but received NaN at index 39'],
    ];
    for (const [name, index, value, message] of cases) {
      it(`refuses ${value} in batch.${name} in forwardSync, forward and lossAndGrad`, async () => {
        const r = new NativeRouter({ hidden: H, backend: 'scalar' });
        r.setParams(params, 1);
        try {
          const b = spoil(name, index, value);
          const err = thrown(() => r.forwardSync(b));
          expect(err).toBeInstanceOf(RangeError);
          expect(err.message).toBe(message);
          await expect(r.forward(b)).rejects.toThrow(new RangeError(message));
          await expect(r.lossAndGrad(b, labels)).rejects.toThrow(new RangeError(message));
        } finally {
          r.close();
        }
      });
    }

    it('refuses a NaN gradient in adamwStep before anything changes', () => {
      const r = new NativeRouter({ hidden: H, backend: 'scalar' });
      const fresh = new NativeRouter({ hidden: H, backend: 'scalar' });
      r.setParams(params, 1);
      fresh.setParams(params, 1);
      try {
        const grad = new Float32Array(r.paramCount).fill(0.01);
        const bad = grad.slice();
        bad[17] = NaN;
        const err = thrown(() => r.adamwStep(bad, { lr: 0.1 }));
        expect(err).toBeInstanceOf(RangeError);
        expect(err.message).toBe('Expected finite values for grad but received NaN at index 17');
        bad[17] = 0.01;
        bad[200] = -Infinity;
        expect(() => r.adamwStep(bad, { lr: 0.1 })).toThrow(new RangeError('Expected finite values for grad but received -Infinity at index 200'));
        expect(r.getParams()).toEqual(params);
        // Neither the moments nor the step count moved: the next good step is a first step, as on a fresh router.
        expect(r.adamwStep(grad, { lr: 0.1 })).toBe(fresh.adamwStep(grad, { lr: 0.1 }));
        expect(r.getParams()).toEqual(fresh.getParams());
      } finally {
        r.close();
        fresh.close();
      }
    });

    it('refuses non-finite parameters', () => {
      const r = new NativeRouter({ hidden: H });
      const p = params.slice();
      p[5] = NaN;
      expect(() => r.setParams(p, 1)).toThrow(new RangeError('Expected finite values for params but received NaN at index 5'));
      r.close();
    });

    it(`accepts temperatures in [${TEMPERATURE_MIN}, ${TEMPERATURE_MAX}] only, and gives sane probabilities at both ends`, () => {
      const r = new NativeRouter({ hidden: H, backend: 'scalar' });
      try {
        for (const t of [1e-300, 0, -1, 9.99e-4, 1000.0001, 1e300]) {
          const err = thrown(() => r.setParams(params, t));
          expect(err).toBeInstanceOf(RangeError);
          expect(err.message).toBe(`Expected number in [0.001, 1000] for temperature but received ${t} of type number`);
        }
        r.setParams(params, TEMPERATURE_MIN);
        const sharp = r.forwardSync(clean);
        r.setParams(params, TEMPERATURE_MAX);
        const flat = r.forwardSync(clean);
        for (let t = 0; t < n; t++) {
          const ps = sharp.probs.subarray(t * 4, t * 4 + 4);
          const pf = flat.probs.subarray(t * 4, t * 4 + 4);
          expect(ps.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
          expect(pf.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
          for (const v of ps) expect(Number.isFinite(v)).toBe(true);
          expect(Math.max(...ps)).toBeGreaterThanOrEqual(0.5); // near one-hot (exactly 0.5 only on a two-way tie)
          for (const v of pf) expect(Math.abs(v - 0.25)).toBeLessThan(0.25 * 0.025); // |z| ≤ 0.015 → within 2.5 % of 1/4
          expect(sharp.assign[t]).toBe(flat.assign[t]); // the temperature never changes the argmax
        }
      } finally {
        r.close();
      }
    });

    it('saveModel uses the same temperature range', async () => {
      await expect(saveModel('/nonexistent/never-written.safetensors', { hidden: H, params, temperature: 1e-300 })).rejects.toThrow(
        new RangeError('Expected number in [0.001, 1000] for temperature but received 1e-300 of type number'),
      );
    });
  });

  describe('native boundary (wrapper bypassed)', () => {
    it('refuses NaN/±Inf in x, vol, risk and sampleWeight, sync and async', async () => {
      const addon = loadNativeAddon();
      const raw = new addon.Router(H, 'auto', 1);
      raw.setParams(params, 1);
      const probs = new Float32Array(n * 4);
      const assign = new Uint8Array(n);
      const grad = new Float32Array(raw.paramCount());
      try {
        for (const [name, index, value] of [['x', 17, NaN], ['vol', 3, Infinity], ['risk', 39, -Infinity]] as const) {
          const b = spoil(name, index, value);
          const message = `Expected finite values for ${name} but received ${value} at index ${index}`;
          expect(() => raw.forwardSync(b.x, b.vol, b.risk, probs, assign, null)).toThrow(new RangeError(message));
          expect(() => raw.forward(b.x, b.vol, b.risk, probs, assign, null)).toThrow(new RangeError(message));
          expect(() => raw.lossAndGrad(b.x, b.vol, b.risk, labels, null, 0, 0, grad)).toThrow(new RangeError(message));
        }
        const sw = new Float32Array(n).fill(1);
        sw[7] = NaN;
        expect(() => raw.lossAndGrad(clean.x, clean.vol, clean.risk, labels, sw, 0, 0, grad)).toThrow(
          new RangeError('Expected finite values for sampleWeight but received NaN at index 7'),
        );
        // Nothing was written by the refused calls, and the router still works.
        expect(probs.every((v) => v === 0)).toBe(true);
        await raw.forward(clean.x, clean.vol, clean.risk, probs, assign, null);
        expect(probs[0]).toBeGreaterThan(0);
      } finally {
        raw.close();
      }
    });

    it('names the first bad index of a big input, whose copy is split over threads', () => {
      const addon = loadNativeAddon();
      const raw = new addon.Router(H, 'auto', 1);
      raw.setParams(params, 1);
      try {
        const m = 250_000; // x is 16 MB: copied in several ranges (4 MB or more each) on any machine with 2+ cores
        const x = new Float32Array(m * H);
        x[m * H - 3] = NaN; // last range
        x[2_100_000] = -Infinity; // second range, first in index order
        const probs = new Float32Array(m * 4);
        expect(() => raw.forward(x, new Float32Array(m), new Float32Array(m), probs, new Uint8Array(m), null)).toThrow(
          new RangeError('Expected finite values for x but received -Infinity at index 2100000'),
        );
      } finally {
        raw.close();
      }
    });

    it('refuses a NaN gradient, non-finite parameters and temperatures out of range', () => {
      const addon = loadNativeAddon();
      const raw = new addon.Router(H, 'auto', 1);
      try {
        raw.setParams(params, 1);
        const grad = new Float32Array(raw.paramCount());
        grad[17] = NaN;
        expect(() => raw.adamwStep(grad, 0.1, 0.9, 0.999, 1e-8, 0.01, 1)).toThrow(
          new RangeError('Expected finite values for grad but received NaN at index 17'),
        );
        expect(raw.getParams()).toEqual(params);
        const p = params.slice();
        p[3] = -Infinity;
        expect(() => raw.setParams(p, 1)).toThrow(new RangeError('Expected finite values for params but received -Infinity at index 3'));
        for (const t of [1e-300, 1001]) {
          expect(() => raw.setParams(params, t)).toThrow(
            new RangeError(`Expected number in [0.001, 1000] for temperature but received ${t} of type number`),
          );
        }
        raw.setParams(params, 1e-3);
        raw.setParams(params, 1e3);
      } finally {
        raw.close();
      }
    });
  });
});
