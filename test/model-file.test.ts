import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DOMAINS } from '../src/domains.js';
import { FEATURE_SPEC } from '../src/data/features/compute.js';
import { INITIAL_GATES, paramLayout } from '../src/router/layout.js';
import { DEFAULT_MODEL_PATH, ModelError, defaultModelPath, initParams, loadModel, saveModel } from '../src/router/model.js';
import { decodeSafetensors, encodeSafetensors, type F32Tensor } from '../src/router/safetensors.js';
import { createForwarder } from '../src/training/forwarder.js';
import { simulatedTokens } from '../src/training/train.js';

describe('initParams', () => {
  it('is deterministic per seed and differs across seeds', () => {
    const a = initParams(16, 7);
    const b = initParams(16, 7);
    const c = initParams(16, 8);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    expect(a.length).toBe(paramLayout(16).size);
    expect(initParams(32, 7).length).toBe(paramLayout(32).size);
  });

  it('starts gates at INITIAL_GATES, biases small, and scales matrices by fan-in', () => {
    for (const H of [16, 32] as const) {
      const layout = paramLayout(H);
      const p = initParams(H, 3);
      const slice = (name: keyof typeof layout.byName) => {
        const t = layout.byName[name];
        return Array.from(p.subarray(t.offset, t.offset + t.size));
      };
      expect(slice('gates')).toEqual(Array.from(new Float32Array(INITIAL_GATES)));
      expect(slice('bc').every((v) => v === 0)).toBe(true);
      expect(slice('be').every((v) => v === 0)).toBe(true);
      const w1 = slice('W1');
      const std = Math.sqrt(w1.reduce((a, v) => a + v * v, 0) / w1.length);
      expect(std).toBeGreaterThan(0.7 * Math.sqrt(2 / H));
      expect(std).toBeLessThan(1.3 * Math.sqrt(2 / H));
      expect(p.every((v) => Number.isFinite(v))).toBe(true);
    }
  });
});

describe('model file', () => {
  let dir: string;
  const savedEnv = process.env.MOE_MODEL;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'moe-model-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  afterEach(() => {
    if (savedEnv === undefined) delete process.env.MOE_MODEL;
    else process.env.MOE_MODEL = savedEnv;
  });

  it('saves every layout tensor by name with metadata and loads it back', async () => {
    const file = path.join(dir, 'm.safetensors');
    const params = initParams(32, 11);
    await saveModel(file, { hidden: 32, params, temperature: 1.7, metadata: { training_config: { steps: 5 }, metrics: { acc: 0.5 }, note: 'x' } });
    const model = await loadModel(file);
    expect(model.hidden).toBe(32);
    expect(model.params).toEqual(params);
    expect(model.temperature).toBeCloseTo(1.7, 6);
    expect(model.metadata.format_version).toBe('1');
    expect(model.metadata.hidden).toBe('32');
    expect(JSON.parse(model.metadata.domains!)).toEqual([...DOMAINS]);
    expect(model.metadata.feature_spec).toBe(FEATURE_SPEC);
    expect(JSON.parse(model.metadata.training_config!)).toEqual({ steps: 5 });
    expect(JSON.parse(model.metadata.metrics!)).toEqual({ acc: 0.5 });
    expect(model.metadata.note).toBe('x');

    const raw = decodeSafetensors(await readFile(file));
    const layout = paramLayout(32);
    for (const t of layout.tensors) {
      expect(raw.tensors.get(t.name)!.shape).toEqual(t.shape);
      expect(raw.tensors.get(t.name)!.data).toEqual(params.subarray(t.offset, t.offset + t.size));
    }
    expect(raw.tensors.get('temperature')!.shape).toEqual([1]);
  });

  /** Rewrites a valid model file with one change, then expects loadModel to refuse it naming the file. */
  async function expectRejected(
    change: (tensors: Map<string, F32Tensor>, meta: Record<string, string>) => void,
    pattern: RegExp,
    code = 'BAD_MODEL',
  ): Promise<void> {
    const good = path.join(dir, 'good.safetensors');
    await saveModel(good, { hidden: 16, params: initParams(16, 1), temperature: 1 });
    const { tensors, metadata } = decodeSafetensors(await readFile(good));
    change(tensors, metadata);
    const bad = path.join(dir, 'bad.safetensors');
    await writeFile(bad, encodeSafetensors(tensors, metadata));
    const err = await loadModel(bad).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelError);
    expect((err as ModelError).code).toBe(code);
    expect((err as Error).message).toMatch(pattern);
    expect((err as Error).message).toContain(bad);
  }

  it('rejects a wrong shape, a missing or unknown tensor, a bad temperature, non-finite weights', async () => {
    await expectRejected((t) => t.set('Wc', { shape: [4, 32], data: t.get('Wc')!.data }), /shape \[32, 4\] for Wc but received \[4, 32\]/);
    await expectRejected((t) => t.delete('We'), /tensor We but it is missing/);
    await expectRejected((t) => t.set('extra', { shape: [1], data: new Float32Array(1) }), /unknown tensor extra/);
    await expectRejected((t) => t.set('temperature', { shape: [1], data: new Float32Array([0]) }), /positive finite temperature but received 0/);
    await expectRejected((t) => t.delete('temperature'), /temperature of shape \[1\] but received none/);
    await expectRejected((t) => t.get('b1')!.data.fill(Number.NaN, 3, 4), /finite values in b1 but received NaN at index 3/);
  });

  it('rejects wrong metadata: version, hidden, domains, feature spec', async () => {
    await expectRejected((_, m) => (m.format_version = '9'), /format_version "1" but received "9"/, 'UNSUPPORTED_VERSION');
    await expectRejected((_, m) => (m.hidden = '24'), /hidden "16" or "32" but received "24"/);
    await expectRejected((_, m) => (m.domains = '["A"]'), /domains/);
    await expectRejected((_, m) => (m.feature_spec = 'v0-old'), /feature_spec .* but received "v0-old"/, 'FEATURE_SPEC_MISMATCH');
    await expectRejected((_, m) => (m.hidden = '32'), /shape \[32, 64\] for W1 but received \[16, 32\]/);
  });

  it('reports a missing file with code NOT_FOUND', async () => {
    const missing = path.join(dir, 'nope.safetensors');
    await expect(loadModel(missing)).rejects.toMatchObject({ code: 'NOT_FOUND', file: missing });
  });

  it('resolves the default path from MOE_MODEL at call time', () => {
    delete process.env.MOE_MODEL;
    expect(defaultModelPath()).toBe(DEFAULT_MODEL_PATH);
    expect(DEFAULT_MODEL_PATH.endsWith(path.join('models', 'router.safetensors'))).toBe(true);
    process.env.MOE_MODEL = path.join(dir, 'other.safetensors');
    expect(defaultModelPath()).toBe(path.join(dir, 'other.safetensors'));
  });

  const shipped = existsSync(DEFAULT_MODEL_PATH);
  it.skipIf(!shipped)('loads the shipped model (models/router.safetensors) and it routes unseen simulator data well', async () => {
    const model = await loadModel(DEFAULT_MODEL_PATH);
    expect(model.hidden).toBe(32);
    expect(model.temperature).toBeGreaterThan(0);
    const metrics = JSON.parse(model.metadata.metrics!) as { heldOutSimulator: { perDay: { accuracy: number } } };
    expect(metrics.heldOutSimulator.perDay.accuracy).toBeGreaterThan(0.5);
    expect(JSON.parse(model.metadata.training_config!)).toMatchObject({ hidden: 32 });
    // A seed no training run uses: the weights must still separate the domains far above chance (25 %).
    const set = simulatedTokens(32, { seeds: [424242], tickersPerSubtype: 1, days: 400 });
    const forwarder = createForwarder(model);
    try {
      const out = await forwarder.forward(set.x, set.vol, set.risk);
      let correct = 0;
      for (let n = 0; n < set.size; n++) if (out.assign[n] === set.labels[n]) correct += 1;
      expect(correct / set.size).toBeGreaterThan(0.6);
    } finally {
      forwarder.close();
    }
  });
  if (!shipped) it.skip(`shipped model check skipped: ${DEFAULT_MODEL_PATH} is absent (run npm run train)`, () => {});
});
