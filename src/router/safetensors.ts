/**
 * Reader and writer for the safetensors format (https://github.com/huggingface/safetensors), float32 only.
 *
 * File layout: `u64le N` · `N` bytes of UTF-8 JSON header (padded with spaces so the data starts 8-byte aligned) ·
 * raw little-endian tensor data. The header maps each tensor name to `{dtype, shape, data_offsets: [begin, end]}`
 * (offsets relative to the start of the data block) plus an optional `__metadata__` object of string → string.
 * The reader applies the same checks as the reference Rust implementation: offsets must tile the data block
 * exactly (no gaps, no overlaps, nothing left over) and each byte length must equal the shape's size times 4.
 */
import { readFile, writeFile, rename } from 'node:fs/promises';
import { endianness } from 'node:os';

export type SafetensorsErrorCode =
  | 'BAD_HEADER_LENGTH'
  | 'BAD_HEADER'
  | 'UNSUPPORTED_DTYPE'
  | 'BAD_SHAPE'
  | 'BAD_OFFSETS'
  | 'SIZE_MISMATCH'
  | 'TRUNCATED'
  | 'TRAILING_DATA'
  | 'BAD_TENSOR';

export class SafetensorsError extends Error {
  readonly code: SafetensorsErrorCode;
  /** File path, or `<buffer>` when decoding bytes in memory. */
  readonly source: string;
  constructor(code: SafetensorsErrorCode, source: string, message: string) {
    super(`${message} (in ${source})`);
    this.name = this.constructor.name;
    this.code = code;
    this.source = source;
  }
}

/** One float32 tensor, row-major. */
export interface F32Tensor {
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsContent {
  /** Tensors in file order of their data offsets. */
  tensors: Map<string, F32Tensor>;
  metadata: Record<string, string>;
}

/** The reference implementation refuses headers above 100 MB; so do we, before allocating anything. */
const MAX_HEADER_BYTES = 100_000_000;
const METADATA_KEY = '__metadata__';
/** Every dtype the format defines; only F32 is supported here, the rest get a precise error. */
const KNOWN_DTYPES = new Set([
  'BOOL', 'U8', 'I8', 'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'F64', 'I64', 'U64', 'F8_E4M3', 'F8_E5M2',
]);
const LITTLE_ENDIAN_HOST = endianness() === 'LE';
const UTF8 = new TextDecoder('utf-8', { fatal: true });

function summary(value: unknown): string {
  const text = JSON.stringify(value);
  if (text === undefined) return String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function isNonNegativeInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Serialises tensors (in the given order) and string metadata to safetensors bytes. */
export function encodeSafetensors(
  tensors: ReadonlyArray<readonly [string, F32Tensor]> | ReadonlyMap<string, F32Tensor>,
  metadata: Record<string, string> = {},
): Buffer {
  const entries = [...tensors];
  const header: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(metadata)) {
    if (typeof value !== 'string') {
      throw new TypeError(`Expected string for metadata.${key} but received ${summary(value)}`);
    }
  }
  if (Object.keys(metadata).length > 0) header[METADATA_KEY] = metadata;
  let offset = 0;
  for (const [name, t] of entries) {
    if (name === METADATA_KEY || name.length === 0) {
      throw new TypeError(`Expected tensor name other than "" and ${METADATA_KEY} but received "${name}"`);
    }
    if (Object.prototype.hasOwnProperty.call(header, name)) {
      throw new TypeError(`Expected unique tensor names but received "${name}" twice`);
    }
    if (!t.shape.every(isNonNegativeInt)) {
      throw new TypeError(`Expected non-negative integer shape for ${name} but received ${summary(t.shape)}`);
    }
    const size = t.shape.reduce((a, b) => a * b, 1);
    if (!(t.data instanceof Float32Array) || t.data.length !== size) {
      throw new TypeError(
        `Expected Float32Array of length ${size} for ${name} but received ${t.data?.constructor?.name ?? typeof t.data} of length ${t.data?.length}`,
      );
    }
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + size * 4] };
    offset += size * 4;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const out = Buffer.alloc(8 + padded + offset);
  out.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(out, 8);
  out.fill(0x20, 8 + json.length, 8 + padded);
  let pos = 8 + padded;
  for (const [, t] of entries) {
    if (LITTLE_ENDIAN_HOST) {
      Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(out, pos);
    } else {
      for (let i = 0; i < t.data.length; i++) out.writeFloatLE(t.data[i] ?? 0, pos + i * 4);
    }
    pos += t.data.byteLength;
  }
  return out;
}

interface HeaderEntry {
  name: string;
  shape: number[];
  begin: number;
  end: number;
}

function parseHeader(bytes: Buffer, source: string): { entries: HeaderEntry[]; metadata: Record<string, string>; dataStart: number } {
  if (bytes.length < 8) {
    throw new SafetensorsError('TRUNCATED', source, `Expected at least 8 bytes (header length) but received ${bytes.length} bytes`);
  }
  const n = bytes.readBigUInt64LE(0);
  if (n === 0n || n > BigInt(MAX_HEADER_BYTES) || n > BigInt(bytes.length - 8)) {
    throw new SafetensorsError(
      'BAD_HEADER_LENGTH',
      source,
      `Expected header length between 1 and ${Math.min(MAX_HEADER_BYTES, bytes.length - 8)} bytes but received ${n}`,
    );
  }
  const headerLength = Number(n);
  let text: string;
  try {
    text = UTF8.decode(bytes.subarray(8, 8 + headerLength));
  } catch (cause) {
    throw new SafetensorsError('BAD_HEADER', source, `Expected UTF-8 header but received invalid bytes (${(cause as Error).message})`);
  }
  if (!text.startsWith('{')) {
    throw new SafetensorsError('BAD_HEADER', source, `Expected JSON object header starting with "{" but received ${summary(text.slice(0, 20))}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new SafetensorsError('BAD_HEADER', source, `Expected valid JSON header but received invalid JSON: ${(cause as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new SafetensorsError('BAD_HEADER', source, `Expected JSON object header but received ${summary(parsed)}`);
  }
  const metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
  for (const [name, raw] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === METADATA_KEY) {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
        throw new SafetensorsError('BAD_HEADER', source, `Expected object of strings for ${METADATA_KEY} but received ${summary(raw)}`);
      }
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') {
          throw new SafetensorsError('BAD_HEADER', source, `Expected string for ${METADATA_KEY}.${k} but received ${summary(v)}`);
        }
        metadata[k] = v;
      }
      continue;
    }
    entries.push(parseEntry(name, raw, source));
  }
  return { entries, metadata, dataStart: 8 + headerLength };
}

function parseEntry(name: string, raw: unknown, source: string): HeaderEntry {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new SafetensorsError('BAD_TENSOR', source, `Expected {dtype, shape, data_offsets} for tensor ${name} but received ${summary(raw)}`);
  }
  const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
  if (typeof dtype !== 'string' || !KNOWN_DTYPES.has(dtype)) {
    throw new SafetensorsError('BAD_TENSOR', source, `Expected a safetensors dtype for tensor ${name} but received ${summary(dtype)}`);
  }
  if (dtype !== 'F32') {
    throw new SafetensorsError('UNSUPPORTED_DTYPE', source, `Expected dtype F32 for tensor ${name} but received ${dtype}`);
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegativeInt)) {
    throw new SafetensorsError('BAD_SHAPE', source, `Expected array of non-negative integers for shape of ${name} but received ${summary(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInt) || offsets[0]! > offsets[1]!) {
    throw new SafetensorsError('BAD_OFFSETS', source, `Expected [begin, end] with 0 <= begin <= end for data_offsets of ${name} but received ${summary(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  const elements = (shape as number[]).reduce((a, b) => a * b, 1);
  if (end - begin !== elements * 4) {
    throw new SafetensorsError(
      'SIZE_MISMATCH',
      source,
      `Expected ${elements * 4} bytes (shape ${summary(shape)} × 4) for ${name} but received data_offsets spanning ${end - begin} bytes`,
    );
  }
  return { name, shape: shape as number[], begin, end };
}

/** Parses safetensors bytes; `source` names the input in errors. Tensor data is copied out of `bytes`. */
export function decodeSafetensors(bytes: Buffer, source = '<buffer>'): SafetensorsContent {
  const { entries, metadata, dataStart } = parseHeader(bytes, source);
  const dataLength = bytes.length - dataStart;
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expected = 0;
  for (const e of entries) {
    if (e.begin !== expected) {
      const what = e.begin < expected ? 'overlaps the previous tensor' : 'leaves a gap after the previous tensor';
      throw new SafetensorsError('BAD_OFFSETS', source, `Expected data_offsets of ${e.name} to start at ${expected} but received ${e.begin} (${what})`);
    }
    expected = e.end;
  }
  if (expected > dataLength) {
    throw new SafetensorsError('TRUNCATED', source, `Expected ${expected} bytes of tensor data but received ${dataLength} bytes (file truncated)`);
  }
  if (expected < dataLength) {
    throw new SafetensorsError('TRAILING_DATA', source, `Expected ${expected} bytes of tensor data but received ${dataLength} bytes (unreferenced trailing data)`);
  }
  const tensors = new Map<string, F32Tensor>();
  for (const e of entries) {
    const count = (e.end - e.begin) / 4;
    const data = new Float32Array(count);
    const start = dataStart + e.begin;
    if (LITTLE_ENDIAN_HOST) {
      // Copy rather than view: the data block need not be 4-byte aligned in files written by other tools.
      bytes.copy(Buffer.from(data.buffer), 0, start, start + count * 4);
    } else {
      for (let i = 0; i < count; i++) data[i] = bytes.readFloatLE(start + i * 4);
    }
    tensors.set(e.name, { shape: e.shape, data });
  }
  return { tensors, metadata };
}

export async function readSafetensors(path: string): Promise<SafetensorsContent> {
  const bytes = await readFile(path);
  return decodeSafetensors(bytes, path);
}

/** Writes atomically (temporary file, then rename) so a reader never sees a half-written model. */
export async function writeSafetensors(
  path: string,
  tensors: ReadonlyArray<readonly [string, F32Tensor]> | ReadonlyMap<string, F32Tensor>,
  metadata: Record<string, string> = {},
): Promise<void> {
  const bytes = encodeSafetensors(tensors, metadata);
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, bytes);
  await rename(tmp, path);
}
