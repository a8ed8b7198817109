import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  SafetensorsError,
  decodeSafetensors,
  encodeSafetensors,
  readSafetensors,
  writeSafetensors,
  type F32Tensor,
} from '../src/router/safetensors.js';
import { Rng } from '../src/util/random.js';

function tensor(shape: number[], seed: number): F32Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  return { shape, data: new Rng(seed).fillNormal(new Float32Array(size)) };
}

/** Builds a file from a hand-written header object, for the malformed cases. */
function rawFile(header: unknown, data: Buffer, headerLength?: bigint): Buffer {
  const json = Buffer.isBuffer(header) ? header : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLength ?? BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

function expectCode(fn: () => unknown, code: string, pattern: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(SafetensorsError);
  expect((caught as SafetensorsError).code).toBe(code);
  expect((caught as Error).message).toMatch(pattern);
  expect((caught as Error).message).toContain('test.safetensors');
}

/**
 * An independent minimal reader following the published format description: it shares no code with the module
 * under test, so a round trip through both proves the bytes, not just self-consistency.
 */
function minimalRead(bytes: Buffer): { header: Record<string, any>; headerLength: number; data: Buffer } {
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, any>;
  return { header, headerLength, data: bytes.subarray(8 + headerLength) };
}

describe('safetensors', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'moe-st-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('round-trips tensors, shapes and metadata through a file', async () => {
    const tensors: [string, F32Tensor][] = [
      ['W1', tensor([3, 5], 1)],
      ['b1', tensor([5], 2)],
      ['scalar', { shape: [], data: new Float32Array([2.5]) }],
      ['empty', { shape: [0, 4], data: new Float32Array(0) }],
      ['cube', tensor([2, 3, 4], 3)],
    ];
    const file = path.join(dir, 'rt.safetensors');
    await writeSafetensors(file, tensors, { format_version: '1', note: 'ünïcode ✓' });
    const back = await readSafetensors(file);
    expect(back.metadata).toEqual({ format_version: '1', note: 'ünïcode ✓' });
    expect([...back.tensors.keys()].sort()).toEqual(tensors.map(([n]) => n).sort());
    for (const [name, t] of tensors) {
      const got = back.tensors.get(name)!;
      expect(got.shape).toEqual(t.shape);
      expect(Array.from(got.data)).toEqual(Array.from(t.data));
    }
  });

  it('writes bytes an independent reader understands: aligned header, spaces, contiguous little-endian data', () => {
    const a = tensor([2, 3], 4);
    const b = tensor([7], 5);
    const bytes = encodeSafetensors([['a', a], ['b', b]], { k: 'v' });
    const { header, headerLength, data } = minimalRead(bytes);
    expect(headerLength % 8).toBe(0);
    const rawHeader = bytes.subarray(8, 8 + headerLength).toString('utf8');
    expect(rawHeader).toMatch(/^\{.*\} *$/s);
    expect(header.__metadata__).toEqual({ k: 'v' });
    expect(header.a).toEqual({ dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] });
    expect(header.b).toEqual({ dtype: 'F32', shape: [7], data_offsets: [24, 52] });
    expect(data.length).toBe(52);
    for (let i = 0; i < 6; i++) expect(data.readFloatLE(i * 4)).toBe(a.data[i]);
    for (let i = 0; i < 7; i++) expect(data.readFloatLE(24 + i * 4)).toBe(b.data[i]);
  });

  it('reads files whose tensors are stored out of name order and whose data block is unaligned', () => {
    const data = Buffer.alloc(12);
    data.writeFloatLE(1.5, 0);
    data.writeFloatLE(-2, 4);
    data.writeFloatLE(3.25, 8);
    // Header length 47 is not a multiple of 8, so the data starts unaligned.
    const header = '{"z":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}';
    const got = decodeSafetensors(rawFile(header, data), 'test.safetensors');
    expect(Array.from(got.tensors.get('z')!.data)).toEqual([1.5]);
    expect(Array.from(got.tensors.get('a')!.data)).toEqual([-2, 3.25]);
    expect(got.metadata).toEqual({});
  });

  const entry = (offsets: unknown, shape: unknown = [2], dtype: unknown = 'F32') => ({ dtype, shape, data_offsets: offsets });

  it('rejects a file shorter than the length prefix', () => {
    expectCode(() => decodeSafetensors(Buffer.alloc(5), 'test.safetensors'), 'TRUNCATED', /at least 8 bytes.*received 5/);
  });

  it('rejects a header length beyond the file or zero', () => {
    const ok = rawFile({ a: entry([0, 8]) }, Buffer.alloc(8));
    expectCode(() => decodeSafetensors(rawFile({ a: entry([0, 8]) }, Buffer.alloc(8), 10_000n), 'test.safetensors'), 'BAD_HEADER_LENGTH', /header length.*10000/);
    expectCode(() => decodeSafetensors(rawFile({}, Buffer.alloc(0), 0n), 'test.safetensors'), 'BAD_HEADER_LENGTH', /received 0/);
    expect(() => decodeSafetensors(ok, 'test.safetensors')).not.toThrow();
  });

  it('rejects a header that is not a JSON object', () => {
    expectCode(() => decodeSafetensors(rawFile('{"a": ', Buffer.alloc(0)), 'test.safetensors'), 'BAD_HEADER', /valid JSON/);
    expectCode(() => decodeSafetensors(rawFile('[1,2]', Buffer.alloc(0)), 'test.safetensors'), 'BAD_HEADER', /starting with "\{"/);
    // "é" in Latin-1 (0xE9 alone) is not valid UTF-8.
    const latin1 = Buffer.concat([Buffer.from('{"__metadata__":{"k":"'), Buffer.from([0xe9]), Buffer.from('"}}')]);
    expectCode(() => decodeSafetensors(rawFile(latin1, Buffer.alloc(0)), 'test.safetensors'), 'BAD_HEADER', /UTF-8 header/);
    expectCode(() => decodeSafetensors(rawFile({ __metadata__: { a: 1 } }, Buffer.alloc(0)), 'test.safetensors'), 'BAD_HEADER', /string for __metadata__\.a/);
  });

  it('rejects unsupported and unknown dtypes', () => {
    expectCode(() => decodeSafetensors(rawFile({ a: entry([0, 4], [2], 'F16') }, Buffer.alloc(4)), 'test.safetensors'), 'UNSUPPORTED_DTYPE', /dtype F32 for tensor a but received F16/);
    expectCode(() => decodeSafetensors(rawFile({ a: entry([0, 8], [2], 'Q4') }, Buffer.alloc(8)), 'test.safetensors'), 'BAD_TENSOR', /safetensors dtype.*"Q4"/);
    expectCode(() => decodeSafetensors(rawFile({ a: 5 }, Buffer.alloc(0)), 'test.safetensors'), 'BAD_TENSOR', /tensor a/);
  });

  it('rejects bad shapes and offsets', () => {
    expectCode(() => decodeSafetensors(rawFile({ a: entry([0, 8], [-2]) }, Buffer.alloc(8)), 'test.safetensors'), 'BAD_SHAPE', /shape of a/);
    expectCode(() => decodeSafetensors(rawFile({ a: entry([8, 0]) }, Buffer.alloc(8)), 'test.safetensors'), 'BAD_OFFSETS', /begin <= end/);
    expectCode(() => decodeSafetensors(rawFile({ a: entry([0]) }, Buffer.alloc(8)), 'test.safetensors'), 'BAD_OFFSETS', /data_offsets of a/);
  });

  it('rejects a shape that does not match the byte length', () => {
    expectCode(() => decodeSafetensors(rawFile({ a: entry([0, 12], [2]) }, Buffer.alloc(12)), 'test.safetensors'), 'SIZE_MISMATCH', /8 bytes.*spanning 12/);
  });

  it('rejects overlapping tensors and gaps', () => {
    expectCode(
      () => decodeSafetensors(rawFile({ a: entry([0, 8]), b: entry([4, 12]) }, Buffer.alloc(12)), 'test.safetensors'),
      'BAD_OFFSETS',
      /b to start at 8 but received 4 \(overlaps/,
    );
    expectCode(
      () => decodeSafetensors(rawFile({ a: entry([0, 8]), b: entry([12, 20]) }, Buffer.alloc(20)), 'test.safetensors'),
      'BAD_OFFSETS',
      /gap/,
    );
  });

  it('rejects truncated data and trailing bytes', () => {
    expectCode(() => decodeSafetensors(rawFile({ a: entry([0, 8]) }, Buffer.alloc(6)), 'test.safetensors'), 'TRUNCATED', /8 bytes of tensor data but received 6/);
    expectCode(() => decodeSafetensors(rawFile({ a: entry([0, 8]) }, Buffer.alloc(9)), 'test.safetensors'), 'TRAILING_DATA', /received 9/);
  });

  it('names the file in errors from readSafetensors', async () => {
    const file = path.join(dir, 'test.safetensors');
    const good = encodeSafetensors([['a', tensor([4], 9)]]);
    await writeSafetensors(file, [['a', tensor([4], 9)]]);
    expect((await readFile(file)).equals(good)).toBe(true);
    await writeFile(file, good.subarray(0, good.length - 3));
    const err = await readSafetensors(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SafetensorsError);
    expect((err as SafetensorsError).code).toBe('TRUNCATED');
    expect((err as SafetensorsError).source).toBe(file);
    expect((err as Error).message).toContain(file);
  });

  it('refuses to encode inconsistent tensors', () => {
    expect(() => encodeSafetensors([['a', { shape: [3], data: new Float32Array(2) }]])).toThrow(/Float32Array of length 3 for a but received Float32Array of length 2/);
    expect(() => encodeSafetensors([['__metadata__', tensor([1], 1)]])).toThrow(/tensor name/);
    expect(() => encodeSafetensors([['a', tensor([1], 1)], ['a', tensor([1], 1)]])).toThrow(/unique/);
  });
});
