// An ensemble's members routed one by one at T = 1, their mean probabilities read at the model's T: checked against
// the float64 reference member by member, and against one router where the ensemble is that router.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBatch, randomParams } from './helpers/router.js';
import { EnsembleRouter, averageMembers } from '../src/router/ensemble.js';
import { NativeRouter, nativeAvailable } from '../src/router/native.js';
import { referenceForward } from '../src/router/reference.js';
import { MAX_MEMBERS, ModelError, initParams, loadModel, saveModel } from '../src/router/model.js';
import { decodeSafetensors, encodeSafetensors } from '../src/router/safetensors.js';
import { paramLayout } from '../src/router/layout.js';
import { createForwarder } from '../src/training/forwarder.js';
import { Rng } from '../src/util/random.js';

const available = nativeAvailable();

describe('averageMembers', () => {
  it('is softmax(ln mean / T) with the first of equal maxima as argmax', () => {
    const a = Float32Array.of(0.7, 0.1, 0.1, 0.1, 0.25, 0.25, 0.25, 0.25);
    const b = Float32Array.of(0.1, 0.7, 0.1, 0.1, 0.25, 0.25, 0.25, 0.25);
    const out = averageMembers([a, b], 0.5);
    // Mean row 0: (0.4, 0.4, 0.1, 0.1); at T = 0.5 squared and renormalised: (0.16, 0.16, 0.01, 0.01) / 0.34.
    expect(Array.from(out.probs.subarray(0, 4))).toEqual([0.16 / 0.34, 0.16 / 0.34, 0.01 / 0.34, 0.01 / 0.34].map(Math.fround).map((v) => expect.closeTo(v, 6)));
    expect(Array.from(out.assign)).toEqual([0, 0]);
    expect(Array.from(out.probs.subarray(4))).toEqual([0.25, 0.25, 0.25, 0.25]);
    expect(() => averageMembers([], 1)).toThrow(/at least one member output/);
    expect(() => averageMembers([a, a.subarray(0, 4)], 1)).toThrow(/one length \(8\) but received 4/);
  });
});

describe.skipIf(!available.ok)('EnsembleRouter', () => {
  const members = [randomParams(16, new Rng(101)), randomParams(16, new Rng(102)), randomParams(16, new Rng(103))];
  const batch = randomBatch(16, 257, new Rng(7));

  it('routes each member at T = 1 and reads their mean at T (reference, float64, member by member)', async () => {
    const T = 0.7;
    const ens = new EnsembleRouter(members, T, { hidden: 16, backend: 'scalar' });
    try {
      expect(ens.members).toBe(3);
      const out = await ens.forward(batch);
      const ref = averageMembers(members.map((p) => Float32Array.from(referenceForward(p, 16, batch, 1).probs)), T);
      for (let i = 0; i < out.probs.length; i++) expect(Math.abs(out.probs[i]! - ref.probs[i]!)).toBeLessThan(2e-5);
      let agree = 0;
      for (let i = 0; i < out.assign.length; i++) agree += out.assign[i] === ref.assign[i] ? 1 : 0;
      expect(agree).toBeGreaterThanOrEqual(out.assign.length - 1);
    } finally {
      ens.close();
    }
  });

  it('is the single router, bit for bit, when it has one member; and the same member twice is that member', async () => {
    const T = 0.8;
    const one = new EnsembleRouter([members[0]!], T, { hidden: 16, backend: 'simd' });
    const twice = new EnsembleRouter([members[0]!, members[0]!], T, { hidden: 16, backend: 'simd' });
    const plain = new NativeRouter({ hidden: 16, backend: 'simd' });
    try {
      plain.setParams(members[0]!, T);
      const p = await plain.forward(batch);
      const o = await one.forward(batch);
      expect(o.probs).toEqual(p.probs);
      expect(o.assign).toEqual(p.assign);
      const t = await twice.forward(batch);
      for (let i = 0; i < t.probs.length; i++) expect(Math.abs(t.probs[i]! - p.probs[i]!)).toBeLessThan(1e-5);
    } finally {
      one.close();
      twice.close();
      plain.close();
    }
  });

  it('throws a JS error for a member of the wrong size, and for none', () => {
    expect(() => new EnsembleRouter([members[0]!, new Float32Array(5)], 1, { hidden: 16 })).toThrow(/params/);
    expect(() => new EnsembleRouter([], 1, { hidden: 16 })).toThrow(/at least one member/);
  });
});

describe('ensemble model file', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'moe-ensemble-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('stores member 0 under the plain names and the others as member1.W1, …, and loads them back', async () => {
    const file = path.join(dir, 'e.safetensors');
    const p = [initParams(16, 1), initParams(16, 2), initParams(16, 3)];
    await saveModel(file, { hidden: 16, params: p[0]!, moreMembers: p.slice(1), temperature: 0.6, historyTemperature: 0.3 });
    const m = await loadModel(file);
    expect(m.members).toHaveLength(3);
    m.members.forEach((q, i) => expect(q).toEqual(p[i]));
    expect(m.params).toBe(m.members[0]);
    expect(m.metadata.members).toBe('3');
    const raw = decodeSafetensors(await readFile(file));
    for (const t of paramLayout(16).tensors) {
      expect(raw.tensors.get(t.name)!.data).toEqual(p[0]!.subarray(t.offset, t.offset + t.size));
      expect(raw.tensors.get(`member2.${t.name}`)!.data).toEqual(p[2]!.subarray(t.offset, t.offset + t.size));
    }
    // A single router's file says 1; a file from before ensembles (no entry) is one member.
    const single = path.join(dir, 's.safetensors');
    await saveModel(single, { hidden: 16, params: p[0]!, temperature: 1 });
    expect((await loadModel(single)).members).toEqual([p[0]]);
    const { tensors, metadata } = decodeSafetensors(await readFile(single));
    expect(metadata.members).toBe('1');
    delete metadata.members;
    const old = path.join(dir, 'old.safetensors');
    await writeFile(old, encodeSafetensors(tensors, metadata));
    expect((await loadModel(old)).members).toEqual([p[0]]);
  });

  it('refuses a missing member tensor, a count that does not match, and too many members', async () => {
    const file = path.join(dir, 'e2.safetensors');
    await saveModel(file, { hidden: 16, params: initParams(16, 1), moreMembers: [initParams(16, 2)], temperature: 1 });
    const { tensors, metadata } = decodeSafetensors(await readFile(file));
    const rejected = async (t: typeof tensors, m: typeof metadata, pattern: RegExp) => {
      const bad = path.join(dir, 'bad.safetensors');
      await writeFile(bad, encodeSafetensors(t, m));
      const err = await loadModel(bad).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ModelError);
      expect((err as ModelError).code).toBe('BAD_MODEL');
      expect((err as Error).message).toMatch(pattern);
    };
    const noWe = new Map(tensors);
    noWe.delete('member1.We');
    await rejected(noWe, metadata, /tensor member1\.We but it is missing/);
    await rejected(tensors, { ...metadata, members: '1' }, /only the tensors .* unknown tensor member1\./);
    await rejected(tensors, { ...metadata, members: '3' }, /tensor member2\.W1 but it is missing/);
    await rejected(tensors, { ...metadata, members: 'two' }, /metadata members an integer in \[1, 16\] but received "two"/);
    await rejected(tensors, { ...metadata, members: '0' }, /received "0"/);
    const many = Array.from({ length: MAX_MEMBERS }, (_, i) => initParams(16, i));
    await expect(saveModel(path.join(dir, 'x.safetensors'), { hidden: 16, params: many[0]!, moreMembers: many, temperature: 1 })).rejects.toThrow(/at most 15 further members/);
    await expect(saveModel(path.join(dir, 'y.safetensors'), { hidden: 16, params: many[0]!, moreMembers: [new Float32Array(3)], temperature: 1 })).rejects.toThrow(/moreMembers\[0\]/);
  });

  it.skipIf(!available.ok)('routes through the forwarder as the ensemble router does, history temperature after', async () => {
    const p = [randomParams(16, new Rng(11)), randomParams(16, new Rng(12))];
    const batch = randomBatch(16, 64, new Rng(3));
    const fw = createForwarder({ hidden: 16, params: p[0]!, members: p, temperature: 0.9, historyTemperature: 0 });
    const ens = new EnsembleRouter(p, 0.9, { hidden: 16, threads: 2 });
    try {
      const a = await fw.forward(batch.x, batch.vol, batch.risk);
      const b = await ens.forward(batch);
      expect(a.probs).toEqual(b.probs);
      expect(a.assign).toEqual(b.assign);
    } finally {
      fw.close();
      ens.close();
    }
  });
});
