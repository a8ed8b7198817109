/**
 * The router's weights: initialisation, and the model file (safetensors with one tensor per layout entry plus
 * `temperature`, and metadata that says how the weights were made and which feature spec they expect).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DOMAINS } from '../domains.js';
import { FEATURE_SPEC } from '../data/features/compute.js';
import { Rng } from '../util/random.js';
import { INITIAL_GATES, isSupportedHidden, paramLayout, type Hidden, type TensorName } from './layout.js';
import { readSafetensors, writeSafetensors, type F32Tensor } from './safetensors.js';
import { TEMPERATURE_MAX, TEMPERATURE_MIN, isValidTemperature } from './native.js';
import { expectedMessage } from '../util/describe.js';
import { HISTORY_TEMPERATURE_MAX, isValidHistoryTemperature } from './history-temperature.js';

/** Version of the file's tensor and metadata conventions; bump when either changes incompatibly. */
export const MODEL_FORMAT_VERSION = '1';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** `$MOE_MODEL` when set, else `<repo>/models/router.safetensors`. Read at call time so tests and services can override it. */
export function defaultModelPath(): string {
  const fromEnv = process.env.MOE_MODEL;
  return fromEnv !== undefined && fromEnv.trim() !== '' ? path.resolve(fromEnv) : path.join(REPO_ROOT, 'models', 'router.safetensors');
}

/** The shipped model's path (ignores `$MOE_MODEL`; use `defaultModelPath()` to honour it). */
export const DEFAULT_MODEL_PATH = path.join(REPO_ROOT, 'models', 'router.safetensors');

export type ModelErrorCode = 'NOT_FOUND' | 'BAD_MODEL' | 'UNSUPPORTED_VERSION' | 'FEATURE_SPEC_MISMATCH';

export class ModelError extends Error {
  readonly code: ModelErrorCode;
  readonly file: string;
  constructor(code: ModelErrorCode, file: string, message: string, options?: { cause?: unknown }) {
    super(`${message} (model file ${file})`, options);
    this.name = this.constructor.name;
    this.code = code;
    this.file = file;
  }
}

export interface LoadedModel {
  hidden: Hidden;
  /** Flat parameters in `paramLayout(hidden)` order (the first member's, for an ensemble). */
  params: Float32Array;
  /**
   * Every member's parameters, `params` first. One for a single router; an ensemble of K routers averages their
   * probabilities (src/router/ensemble.ts), and `temperature`, `historyTemperature` and `contextTemperature` apply to
   * that average.
   */
  members: Float32Array[];
  /** Softmax temperature fitted after training. */
  temperature: number;
  /**
   * History temperature κ (src/router/history-temperature.ts): a token of a short history is read at T·(1 + κ·u).
   * 0 when the file has no `history_temperature` tensor.
   */
  historyTemperature: number;
  /**
   * Context temperature λ (src/router/history-temperature.ts): a token without its context series is read at
   * T·(1 + κ·u + λ·c). 0 when the file has no `context_temperature` tensor.
   */
  contextTemperature: number;
  /** Raw string metadata of the file (`training_config` and `metrics` are JSON text). */
  metadata: Record<string, string>;
}

export interface SaveModelInput {
  hidden: Hidden;
  params: Float32Array;
  /** Further members of an ensemble, stored as `member1.W1`, … (`params` is member 0, under the plain names). */
  moreMembers?: readonly Float32Array[];
  temperature: number;
  /** History temperature κ, stored as the tensor `history_temperature` when not 0. @defaultValue 0 */
  historyTemperature?: number;
  /** Context temperature λ, stored as the tensor `context_temperature` when not 0. @defaultValue 0 */
  contextTemperature?: number;
  /**
   * Extra metadata. Strings are stored as they are, anything else as JSON. `training_config` and `metrics` default
   * to `{}`; `format_version`, `hidden`, `domains` and `feature_spec` are always set by `saveModel` itself.
   */
  metadata?: Record<string, unknown>;
}

/**
 * Seeded initialisation. Matrices feeding a ReLU get He-scaled normals, the rest Xavier; the scalar-signal
 * units (vol, risk, stats) start with small positive biases so their ReLUs are alive at the first step and
 * weights scaled to their input's range;
 * gates start at `INITIAL_GATES`. Each tensor draws from its own stream, so changing one shape leaves the others.
 */
export function initParams(hidden: Hidden, seed: number): Float32Array {
  const layout = paramLayout(hidden);
  const H = hidden;
  const F = layout.features;
  const D = DOMAINS.length;
  const params = new Float32Array(layout.size);
  const scale: Record<TensorName, (rng: Rng) => number> = {
    W1: (r) => r.normal() * Math.sqrt(2 / H),
    b1: () => 0.01,
    Wc: (r) => r.normal() * Math.sqrt(2 / (F + D)),
    bc: () => 0,
    // vol is a daily σ (~0.0005 for T-bills to ~0.08 for VIX products) and risk a drawdown fraction (0..1):
    // scaled so that vol·Wv and risk·Wr are O(1) from the first step.
    Wv: (r) => r.normal() * 20,
    Bv: (r) => r.uniform(0.05, 0.15),
    Wr: (r) => r.normal() * 5,
    Br: (r) => r.uniform(0.05, 0.15),
    Ws: (r) => r.normal() * Math.sqrt(2 / 3),
    Bs: (r) => r.uniform(0.05, 0.15),
    gates: () => 0,
    We: (r) => r.normal() * Math.sqrt(1 / F),
    be: () => 0,
  };
  for (const t of layout.tensors) {
    const rng = Rng.derive(seed, t.name);
    const draw = scale[t.name];
    for (let i = 0; i < t.size; i++) params[t.offset + i] = draw(rng);
  }
  params.set(INITIAL_GATES, layout.byName.gates.offset);
  return params;
}

/** Writes the model file (atomically). */
export async function saveModel(file: string, input: SaveModelInput): Promise<void> {
  const { hidden, params, temperature } = input;
  const layout = paramLayout(hidden);
  const more = input.moreMembers ?? [];
  if (1 + more.length > MAX_MEMBERS) throw new RangeError(expectedMessage(`at most ${MAX_MEMBERS - 1} further members`, 'moreMembers', more.length));
  for (const [i, p] of [params, ...more].entries()) {
    if (!(p instanceof Float32Array) || p.length !== layout.size) {
      throw new TypeError(expectedMessage(`Float32Array of length ${layout.size}`, i === 0 ? 'params' : `moreMembers[${i - 1}]`, p));
    }
  }
  if (!isValidTemperature(temperature)) {
    throw new RangeError(expectedMessage(`number in [${TEMPERATURE_MIN}, ${TEMPERATURE_MAX}]`, 'temperature', temperature));
  }
  const tensors: [string, F32Tensor][] = layout.tensors.map((t) => [
    t.name,
    { shape: t.shape, data: params.slice(t.offset, t.offset + t.size) },
  ]);
  more.forEach((p, i) => {
    for (const t of layout.tensors) tensors.push([`${memberPrefix(i + 1)}${t.name}`, { shape: t.shape, data: p.slice(t.offset, t.offset + t.size) }]);
  });
  tensors.push(['temperature', { shape: [1], data: new Float32Array([temperature]) }]);
  for (const [key, tensor] of [['historyTemperature', 'history_temperature'], ['contextTemperature', 'context_temperature']] as const) {
    const v = input[key] ?? 0;
    if (!isValidHistoryTemperature(v)) throw new RangeError(expectedMessage(`number in [0, ${HISTORY_TEMPERATURE_MAX}]`, key, v));
    if (v !== 0) tensors.push([tensor, { shape: [1], data: new Float32Array([v]) }]);
  }
  const metadata: Record<string, string> = { training_config: '{}', metrics: '{}' };
  for (const [key, value] of Object.entries(input.metadata ?? {})) {
    metadata[key] = typeof value === 'string' ? value : JSON.stringify(value);
  }
  Object.assign(metadata, {
    format_version: MODEL_FORMAT_VERSION,
    hidden: String(hidden),
    members: String(1 + more.length),
    domains: JSON.stringify(DOMAINS),
    feature_spec: FEATURE_SPEC,
  });
  await writeSafetensors(file, tensors, metadata);
}

export interface LoadModelOptions {
  /** Refuse a file trained for another feature spec (its inputs would mean something else). @defaultValue true */
  checkFeatureSpec?: boolean;
}

/** Reads and validates a model file: every layout tensor with its exact shape, finite values, matching metadata. */
export async function loadModel(file: string = defaultModelPath(), opts: LoadModelOptions = {}): Promise<LoadedModel> {
  let content;
  try {
    content = await readSafetensors(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ModelError('NOT_FOUND', file, 'Expected a model file but found none (build one with `npm run train`)', { cause: e });
    }
    throw e;
  }
  const { tensors, metadata } = content;
  if (metadata.format_version !== MODEL_FORMAT_VERSION) {
    throw new ModelError('UNSUPPORTED_VERSION', file, `Expected format_version "${MODEL_FORMAT_VERSION}" but received ${JSON.stringify(metadata.format_version)}`);
  }
  const hidden = Number(metadata.hidden);
  if (!isSupportedHidden(hidden) || metadata.hidden !== String(hidden)) {
    throw new ModelError('BAD_MODEL', file, `Expected metadata hidden "16" or "32" but received ${JSON.stringify(metadata.hidden)}`);
  }
  if (metadata.domains !== JSON.stringify(DOMAINS)) {
    throw new ModelError('BAD_MODEL', file, `Expected metadata domains ${JSON.stringify(DOMAINS)} but received ${JSON.stringify(metadata.domains)}`);
  }
  const checkSpec = opts.checkFeatureSpec ?? true;
  if (checkSpec && metadata.feature_spec !== FEATURE_SPEC) {
    throw new ModelError(
      'FEATURE_SPEC_MISMATCH',
      file,
      `Expected feature_spec "${FEATURE_SPEC}" but received ${JSON.stringify(metadata.feature_spec)} (retrain with \`npm run train\`)`,
    );
  }
  const layout = paramLayout(hidden);
  // A file from before ensembles has no `members` entry: one router.
  const count = metadata.members === undefined ? 1 : Number(metadata.members);
  if (!Number.isSafeInteger(count) || count < 1 || count > MAX_MEMBERS || (metadata.members !== undefined && metadata.members !== String(count))) {
    throw new ModelError('BAD_MODEL', file, `Expected metadata members an integer in [1, ${MAX_MEMBERS}] but received ${JSON.stringify(metadata.members)}`);
  }
  const members = Array.from({ length: count }, () => new Float32Array(layout.size));
  const params = members[0]!;
  const expectedNames = new Set<string>(['temperature', 'history_temperature', 'context_temperature']);
  for (let m = 0; m < count; m++) for (const t of layout.tensors) expectedNames.add(`${memberPrefix(m)}${t.name}`);
  for (const name of tensors.keys()) {
    if (!expectedNames.has(name)) {
      throw new ModelError('BAD_MODEL', file, `Expected only the tensors ${[...expectedNames].join(', ')} but received unknown tensor ${name}`);
    }
  }
  members.forEach((into, m) => {
    for (const spec of layout.tensors) {
      const name = `${memberPrefix(m)}${spec.name}`;
      const t = tensors.get(name);
      if (t === undefined) throw new ModelError('BAD_MODEL', file, `Expected tensor ${name} but it is missing`);
      if (!sameShape(t.shape, spec.shape)) {
        throw new ModelError('BAD_MODEL', file, `Expected shape [${spec.shape.join(', ')}] for ${name} but received [${t.shape.join(', ')}]`);
      }
      const bad = t.data.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) throw new ModelError('BAD_MODEL', file, `Expected finite values in ${name} but received ${t.data[bad]} at index ${bad}`);
      into.set(t.data, spec.offset);
    }
  });
  const temp = tensors.get('temperature');
  if (temp === undefined || !sameShape(temp.shape, [1])) {
    throw new ModelError('BAD_MODEL', file, `Expected tensor temperature of shape [1] but received ${temp === undefined ? 'none' : `[${temp.shape.join(', ')}]`}`);
  }
  const temperature = temp.data[0] ?? Number.NaN;
  if (!isValidTemperature(temperature)) {
    throw new ModelError('BAD_MODEL', file, `Expected positive finite temperature but received ${temperature} (accepted: [${TEMPERATURE_MIN}, ${TEMPERATURE_MAX}])`);
  }
  // Optional scalars: 0 when absent.
  const scalar = (name: string): number => {
    const t = tensors.get(name);
    if (t !== undefined && !sameShape(t.shape, [1])) {
      throw new ModelError('BAD_MODEL', file, `Expected tensor ${name} of shape [1] but received [${t.shape.join(', ')}]`);
    }
    const v = t === undefined ? 0 : t.data[0]!;
    if (!isValidHistoryTemperature(v)) throw new ModelError('BAD_MODEL', file, `Expected ${name} in [0, ${HISTORY_TEMPERATURE_MAX}] but received ${v}`);
    return v;
  };
  const historyTemperature = scalar('history_temperature');
  const contextTemperature = scalar('context_temperature');
  return { hidden, params, members, temperature, historyTemperature, contextTemperature, metadata };
}

/** Most members a model file may hold. */
export const MAX_MEMBERS = 16;

/** Tensor-name prefix of member m: none for the first (so a single-router reader finds a whole router), `member{m}.` after. */
function memberPrefix(m: number): string {
  return m === 0 ? '' : `member${m}.`;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
