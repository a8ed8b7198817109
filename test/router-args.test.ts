// Bad arguments: exact messages from the TypeScript layer, and proof that the raw addon boundary throws
// TypeError/RangeError (never crashes) when the wrapper is bypassed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { paramLayout } from '../src/router/layout.js';
import { NativeRouter, RouterError, loadNativeAddon, nativeAvailable, type TokenBatch } from '../src/router/native.js';
import { expectedMessage } from '../src/util/describe.js';

const available = nativeAvailable();
const suite = available.ok ? describe : describe.skip;
const suiteName = available.ok ? 'router argument checks' : `router argument checks (skipped: ${available.reason})`;

const H = 16;
const n = 4;
const batch = (): TokenBatch => ({ x: new Float32Array(n * H), vol: new Float32Array(n), risk: new Float32Array(n) });

suite(suiteName, () => {
  describe('TypeScript layer', () => {
    // Created in beforeAll: describe bodies run even when the suite is skipped (addon missing).
    let r: NativeRouter;
    beforeAll(() => {
      r = new NativeRouter({ hidden: H });
    });
    afterAll(() => r.close());
    const size = paramLayout(H).size;

    const cases: [string, () => unknown, ErrorConstructor, string][] = [
      ['hidden', () => new NativeRouter({ hidden: 24 as 16 }), RangeError, 'Expected 16 or 32 for options.hidden but received 24 of type number'],
      ['backend', () => new NativeRouter({ hidden: H, backend: 'gpu' as 'auto' }), RangeError, `Expected 'auto', 'cuda', 'simd' or 'scalar' for options.backend but received "gpu"`],
      ['threads 0', () => new NativeRouter({ hidden: H, threads: 0 }), RangeError, 'Expected integer in 1..64 for options.threads but received 0 of type number'],
      ['threads 1.5', () => new NativeRouter({ hidden: H, threads: 1.5 }), RangeError, 'Expected integer in 1..64 for options.threads but received 1.5 of type number'],
      ['threads 65', () => new NativeRouter({ hidden: H, threads: 65 }), RangeError, 'Expected integer in 1..64 for options.threads but received 65 of type number'],
      ['threads string', () => new NativeRouter({ hidden: H, threads: '2' as unknown as number }), TypeError, 'Expected integer in 1..64 for options.threads but received "2"'],
      ['params length', () => r.setParams(new Float32Array(size - 1)), RangeError, `Expected Float32Array of length ${size} for params but received Float32Array of length ${size - 1}`],
      ['params type', () => r.setParams(new Float64Array(size) as unknown as Float32Array), TypeError, `Expected Float32Array of length ${size} for params but received Float64Array of length ${size}`],
      ['temperature 0', () => r.setParams(new Float32Array(size), 0), RangeError, 'Expected number in [0.001, 1000] for temperature but received 0 of type number'],
      ['temperature NaN', () => r.setParams(new Float32Array(size), NaN), RangeError, 'Expected number in [0.001, 1000] for temperature but received NaN of type number'],
      ['temperature Infinity', () => r.setParams(new Float32Array(size), Infinity), RangeError, 'Expected number in [0.001, 1000] for temperature but received Infinity of type number'],
      ['x length', () => r.forwardSync({ ...batch(), x: new Float32Array(n * H - 1) }), RangeError, 'Expected Float32Array of length 64 for batch.x but received Float32Array of length 63'],
      ['x type', () => r.forwardSync({ ...batch(), x: [1, 2] as unknown as Float32Array }), TypeError, 'Expected Float32Array of length 64 for batch.x but received array of length 2'],
      ['risk length', () => r.forwardSync({ ...batch(), risk: new Float32Array(3) }), RangeError, 'Expected Float32Array of length 4 for batch.risk but received Float32Array of length 3'],
      ['empty batch', () => r.forwardSync({ x: new Float32Array(0), vol: new Float32Array(0), risk: new Float32Array(0) }), RangeError, 'Expected at least 1 token for batch.vol but received Float32Array of length 0'],
      ['batch null', () => r.forwardSync(null as unknown as TokenBatch), TypeError, 'Expected object for batch but received null'],
      ['expert option', () => r.forwardSync(batch(), { expert: 1 as unknown as boolean }), TypeError, 'Expected boolean for options.expert but received 1 of type number'],
      ['grad length', () => r.adamwStep(new Float32Array(3), { lr: 0.1 }), RangeError, `Expected Float32Array of length ${size} for grad but received Float32Array of length 3`],
      ['lr', () => r.adamwStep(new Float32Array(size), { lr: -1 }), RangeError, 'Expected finite number > 0 for options.lr but received -1 of type number'],
      ['beta1', () => r.adamwStep(new Float32Array(size), { lr: 0.1, beta1: 1 }), RangeError, 'Expected number in [0, 1) for options.beta1 but received 1 of type number'],
      ['clipNorm', () => r.adamwStep(new Float32Array(size), { lr: 0.1, clipNorm: -0.5 }), RangeError, 'Expected finite number >= 0 for options.clipNorm but received -0.5 of type number'],
    ];
    for (const [name, fn, type, message] of cases) {
      it(`rejects bad ${name}`, () => {
        let caught: unknown;
        try {
          fn();
        } catch (err) {
          caught = err;
        }
        expect(caught).toBeInstanceOf(type);
        expect((caught as Error).message).toBe(message);
      });
    }

    it('rejects bad loss arguments with exact messages', async () => {
      await expect(r.lossAndGrad(batch(), new Uint8Array([0, 1, 4, 2]))).rejects.toThrow(
        new RangeError('Expected values in 0..3 for labels but received 4 at index 2'),
      );
      await expect(r.lossAndGrad(batch(), new Uint8Array(3))).rejects.toThrow(
        new RangeError('Expected Uint8Array of length 4 for labels but received Uint8Array of length 3'),
      );
      await expect(r.lossAndGrad(batch(), new Uint8Array(4), { labelSmoothing: 1 })).rejects.toThrow(
        new RangeError('Expected number in [0, 1) for options.labelSmoothing but received 1 of type number'),
      );
      await expect(r.lossAndGrad(batch(), new Uint8Array(4), { reconWeight: -1 })).rejects.toThrow(
        new RangeError('Expected finite number >= 0 for options.reconWeight but received -1 of type number'),
      );
      await expect(
        r.lossAndGrad(batch(), new Uint8Array(4), { sampleWeight: new Float32Array([1, NaN, 1, 1]) }),
      ).rejects.toThrow(new RangeError('Expected finite values for options.sampleWeight but received NaN at index 1'));
    });

    it('throws RouterError CLOSED after close, and close is idempotent', async () => {
      const c = new NativeRouter({ hidden: H });
      c.close();
      c.close();
      expect(() => c.getParams()).toThrow(RouterError);
      await expect(c.forward(batch())).rejects.toMatchObject({ code: 'CLOSED', message: 'NativeRouter is closed' });
    });
  });

  describe('native boundary (wrapper bypassed)', () => {
    const addon = available.ok ? loadNativeAddon() : undefined;

    it('throws on bad constructor arguments', () => {
      expect(() => new addon!.Router(17, 'auto', 1)).toThrow(new RangeError('Expected 16 or 32 for hidden but received 17 of type number'));
      expect(() => new addon!.Router(16, 'fast', 1)).toThrow(
        new RangeError(`Expected 'auto', 'cuda', 'simd' or 'scalar' for backend but received "fast"`),
      );
      expect(() => new addon!.Router(16, 'auto', 0)).toThrow(new RangeError('Expected integer in 1..64 for threads but received 0 of type number'));
      expect(() => new (addon!.Router as unknown as new () => unknown)()).toThrow(TypeError);
    });

    it('prints the received value exactly as describeValue does (one message shape in both layers)', () => {
      // 39 two-byte characters then an emoji: the cut at 40 UTF-16 units splits its surrogate pair.
      const long = `${'é'.repeat(39)}😀 and more`;
      const values: unknown[] = [
        17, 1.5, 1e-300, -0, NaN, -Infinity, 2 ** 53, true, false, 10n,
        'gpu', '', 'quote " back \\ tab \t nl \n ctl \u0001 del \u007f', long, 'x'.repeat(41), '\ud800 lone',
        [1, 2], [], {}, null, undefined, () => 1, Symbol('s'),
        new Float64Array(3), new Int8Array(2), new Uint8ClampedArray(1), new BigInt64Array(1), new DataView(new ArrayBuffer(4)),
      ];
      for (const v of values) {
        let caught: unknown;
        try {
          new addon!.Router(v as number, 'auto', 1);
        } catch (err) {
          caught = err;
        }
        expect((caught as Error).message, String(typeof v)).toBe(expectedMessage('16 or 32', 'hidden', v));
      }
    });

    it('throws on wrong lengths and types instead of reading out of bounds', async () => {
      const raw = new addon!.Router(H, 'auto', 1);
      const x = new Float32Array(n * H);
      const vol = new Float32Array(n);
      const risk = new Float32Array(n);
      const probs = new Float32Array(n * 4);
      const assign = new Uint8Array(n);
      expect(() => raw.forwardSync(new Float32Array(63), vol, risk, probs, assign, null)).toThrow(
        new RangeError('Expected Float32Array of length 64 for x but received Float32Array of length 63'),
      );
      expect(() => raw.forwardSync(x, vol, risk, new Float32Array(3), assign, null)).toThrow(
        new RangeError('Expected Float32Array of length 16 for probs but received Float32Array of length 3'),
      );
      expect(() => raw.forwardSync(x, vol, risk, probs, new Int32Array(n) as unknown as Uint8Array, null)).toThrow(
        new TypeError('Expected Uint8Array of length 4 for assign but received Int32Array of length 4'),
      );
      expect(() => raw.forwardSync(x, 'vol' as unknown as Float32Array, risk, probs, assign, null)).toThrow(
        new TypeError('Expected Float32Array for vol but received "vol"'),
      );
      expect(() => raw.forward(x, vol, risk, probs, assign, new Float32Array(5))).toThrow(
        new RangeError('Expected Float32Array of length 64 or null for expert but received Float32Array of length 5'),
      );
      expect(() => raw.setParams(new Float32Array(raw.paramCount()), -2)).toThrow(
        new RangeError('Expected number in [0.001, 1000] for temperature but received -2 of type number'),
      );
      expect(() =>
        raw.lossAndGrad(x, vol, risk, new Uint8Array([0, 9, 0, 0]), null, 0, 0, new Float32Array(raw.paramCount())),
      ).toThrow(new RangeError('Expected values in 0..3 for labels but received 9 at index 1'));
      expect(() => raw.adamwStep(new Float32Array(raw.paramCount()), NaN, 0.9, 0.999, 1e-8, 0, 1)).toThrow(
        new RangeError('Expected finite number > 0 for lr but received NaN of type number'),
      );
      // Still usable after all that.
      raw.forwardSync(x, vol, risk, probs, assign, null);
      expect(probs[0]).toBeCloseTo(0.25, 6);
      raw.close();
      expect(() => raw.getParams()).toThrow('Router is closed');
    });
  });
});
