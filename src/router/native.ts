/**
 * TypeScript face of the native router addon (`build/Release/moe_router.node`, built by `npm run build:native`).
 * Every argument is validated here first, with the project's message shape; the addon checks again at its
 * boundary. Large batches run off the JS thread (`forward`, `lossAndGrad` return promises).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expectedMessage } from '../util/describe.js';
import { isShared, sharedArray } from '../util/shared-memory.js';
import { D, isSupportedHidden, paramLayout, type Hidden } from './layout.js';

export type BackendChoice = 'auto' | 'cuda' | 'simd' | 'scalar';

export interface RouterOptions {
  /** Embedding size H (F = 2H). */
  hidden: Hidden;
  /** Backend: 'auto' runs on the GPU when the addon has CUDA and a device is usable, else on the best SIMD family
   * (else scalar) and says why in `fallbackReason`; 'cuda' requires the GPU (RouterError BACKEND_UNAVAILABLE when
   * there is none); 'simd' picks AVX-512 or AVX2 by CPUID (error when neither); 'scalar' is the oracle.
   * @defaultValue 'auto' */
  backend?: BackendChoice;
  /** CPU threads one batch is split over (1..64); unused on the GPU. @defaultValue 1 */
  threads?: number;
}

/** What the addon reports about its CUDA backend. */
export interface CudaStatus {
  /** The addon was built with the CUDA backend (nvcc was present at build time). */
  built: boolean;
  /** A GPU is usable now: `backend: 'auto'` will run on it. */
  available: boolean;
  /** Why it is not available (null when it is). */
  reason: string | null;
  /** e.g. 'NVIDIA H100 80GB HBM3 (sm_90)' (null when not available). */
  device: string | null;
}

export interface TokenBatch {
  /** n·H embeddings, row-major. */
  x: Float32Array;
  /** n daily realised volatilities. */
  vol: Float32Array;
  /** n risk scalars. */
  risk: Float32Array;
}

/** A batch with its labels (0..3): a training set, or one part of it (`NativeRouter.setTrainingSet`). */
export type TrainingRows = TokenBatch & { labels: Uint8Array };

export interface ForwardOptions {
  /** Also compute the activated output of each token's chosen expert. @defaultValue false */
  expert?: boolean;
  /** Write into these arrays instead of allocating (probs n·4, assign n, expert n·H when `expert` is true);
   * saves the page faults of fresh 100 MB outputs on million-token batches. @defaultValue fresh arrays */
  out?: ForwardOutput;
}

export interface ForwardOutput {
  /** n·4 softmax probabilities. */
  probs: Float32Array;
  /** n chosen domains (argmax, ties → lowest index). */
  assign: Uint8Array;
  /** n·H activated expert outputs, when requested. */
  expert?: Float32Array;
}

export interface LossOptions {
  /** Label smoothing ε in [0, 1). @defaultValue 0 */
  labelSmoothing?: number;
  /** Weight λ ≥ 0 of the reconstruction loss. @defaultValue 0 */
  reconWeight?: number;
  /** n finite per-token weights of the cross-entropy (focal weighting is computed by the caller). */
  sampleWeight?: Float32Array;
}

export interface LossResult {
  loss: number;
  ce: number;
  rec: number;
  /** Mean gradient in the flat layout of `paramLayout(hidden)`. */
  grad: Float32Array;
}

/** What `trainSteps` returns, one value per step: its batch's loss parts before the step and the gradient norm
 * before clipping. */
export interface StepsResult {
  loss: Float64Array;
  ce: Float64Array;
  rec: Float64Array;
  gradNorm: Float64Array;
  /**
   * Where the call's time went, in milliseconds: [waiting for a thread of Node's pool, running there (the device's
   * work and the wait for it)]. Absent from an addon built before it.
   */
  timing?: Float64Array;
}

export interface AdamWOptions {
  /** Learning rate, finite > 0. */
  lr: number;
  /** @defaultValue 0.9 */
  beta1?: number;
  /** @defaultValue 0.999 */
  beta2?: number;
  /** @defaultValue 1e-8 */
  eps?: number;
  /** Decoupled weight decay on matrices only. @defaultValue 0.01 */
  weightDecay?: number;
  /** Global-norm clip; 0 turns clipping off. @defaultValue 1 */
  clipNorm?: number;
}

export type RouterErrorCode = 'NATIVE_UNAVAILABLE' | 'BACKEND_UNAVAILABLE' | 'CLOSED';

export class RouterError extends Error {
  constructor(
    readonly code: RouterErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = this.constructor.name;
  }
}

/** The raw addon surface (argument order fixed; JS fills every default). */
interface AddonRouter {
  backendName(): string;
  backendInfo(): { name: string; fallback: string | null; device: string | null };
  paramCount(): number;
  setParams(params: Float32Array, temperature: number): void;
  getParams(): Float32Array;
  forwardSync(x: Float32Array, vol: Float32Array, risk: Float32Array, probs: Float32Array, assign: Uint8Array,
    expert: Float32Array | null): void;
  forward(x: Float32Array, vol: Float32Array, risk: Float32Array, probs: Float32Array, assign: Uint8Array,
    expert: Float32Array | null): Promise<void>;
  lossAndGrad(x: Float32Array, vol: Float32Array, risk: Float32Array, labels: Uint8Array,
    sampleWeight: Float32Array | null, labelSmoothing: number, reconWeight: number,
    grad: Float32Array): Promise<{ loss: number; ce: number; rec: number }>;
  adamwStep(grad: Float32Array, lr: number, beta1: number, beta2: number, eps: number, weightDecay: number,
    clipNorm: number): number;
  trainStepsSupported(): boolean;
  setTrainingSet(parts: readonly TrainingRows[], classWeights: Float32Array): void;
  trainStepsOnSet(index: Uint32Array, labelSmoothing: number, reconWeight: number, focalGamma: number, lr: Float32Array,
    beta1: number, beta2: number, eps: number, weightDecay: number,
    clipNorm: number): Promise<StepsResult>;
  trainStepsOnSetSync(index: Uint32Array, labelSmoothing: number, reconWeight: number, focalGamma: number, lr: Float32Array,
    beta1: number, beta2: number, eps: number, weightDecay: number,
    clipNorm: number): StepsResult;
  trainSteps(x: Float32Array, vol: Float32Array, risk: Float32Array, labels: Uint8Array,
    sampleWeight: Float32Array | null, labelSmoothing: number, reconWeight: number, focalGamma: number, lr: Float32Array,
    beta1: number, beta2: number, eps: number, weightDecay: number,
    clipNorm: number): Promise<StepsResult>;
  resetOptimizer(): void;
  close(): void;
}

export interface NativeAddon {
  Router: new (hidden: number, backend: string, threads: number) => AddonRouter;
  /** 'avx512' | 'avx2' | '' — the SIMD level `backend: 'auto'` uses on this CPU when no GPU runs. */
  simdLevel(): string;
  cudaStatus(): CudaStatus;
  /** An ArrayBuffer over `bytes` of page-locked host memory, or null where none can be had (no usable GPU). */
  allocPinned(bytes: number): ArrayBuffer | null;
  abiVersion: number;
}

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Where the addon is loaded from: `MOE_NATIVE_PATH` when set, else `<repo>/build/Release/moe_router.node`. */
export function nativeAddonPath(): string {
  const override = process.env.MOE_NATIVE_PATH;
  return override && override.length > 0 ? path.resolve(override) : path.join(REPO_ROOT, 'build/Release/moe_router.node');
}

let cached: { ok: true; addon: NativeAddon } | { ok: false; reason: string } | undefined;

function load(): { ok: true; addon: NativeAddon } | { ok: false; reason: string } {
  if (cached) return cached;
  const file = nativeAddonPath();
  if (!existsSync(file)) {
    cached = { ok: false, reason: `native addon not found at ${file} (run npm run build:native)` };
    return cached;
  }
  try {
    const addon = createRequire(import.meta.url)(file) as NativeAddon;
    cached = { ok: true, addon };
  } catch (err) {
    cached = { ok: false, reason: `native addon at ${file} failed to load: ${(err as Error).message}` };
  }
  return cached;
}

/** The loaded addon module itself (tests use it to probe the native boundary directly). */
export function loadNativeAddon(): NativeAddon {
  const r = load();
  if (!r.ok) throw new RouterError('NATIVE_UNAVAILABLE', r.reason);
  return r.addon;
}

/** The addon's CUDA status; when the addon itself does not load, `built: false` with the load failure as reason. */
export function cudaStatus(): CudaStatus {
  const r = load();
  if (!r.ok) return { built: false, available: false, reason: r.reason, device: null };
  return r.addon.cudaStatus();
}

/** Whether the addon is built and loads in this environment. */
export function nativeAvailable(): { ok: true } | { ok: false; reason: string } {
  const r = load();
  return r.ok ? { ok: true } : { ok: false, reason: r.reason };
}

// ---- validation (message shape: `Expected <what> for <name> but received <value>`, src/util/describe.ts) ----

/**
 * Smallest softmax temperature accepted (setParams, the model file). At T = 1e-3 any logit gap above 0.02 makes
 * the probability ratio smaller than e^-20, one-hot to float32 precision: going lower buys nothing a caller could
 * want. Far lower breaks the arithmetic: below 1.2e-38 T is 0 in float32 and z = ±15 / 0 gives Inf and NaN
 * probabilities (1e-300 used to pass the `> 0` check and zero every probability).
 */
export const TEMPERATURE_MIN = 1e-3;
/**
 * Largest softmax temperature accepted. Logits are clipped to ±15 before the division (LOGIT_CLIP), so at T = 1e3
 * every z lies in ±0.015 and every probability within 2.5 % of 1/4: a larger T only means "uniform" more
 * slowly. Fitted temperatures sit well inside the range (fitTemperature searches [0.05, 20]).
 */
export const TEMPERATURE_MAX = 1e3;
const TEMPERATURE_TEXT = `number in [${TEMPERATURE_MIN}, ${TEMPERATURE_MAX}]`;

/** Whether `t` is a temperature the router accepts: a number in [TEMPERATURE_MIN, TEMPERATURE_MAX] (NaN is not). */
export function isValidTemperature(t: number): boolean {
  return t >= TEMPERATURE_MIN && t <= TEMPERATURE_MAX;
}

function expectF32(v: unknown, name: string, length: number): Float32Array {
  const what = `Float32Array of length ${length}`;
  if (!(v instanceof Float32Array)) throw new TypeError(expectedMessage(what, name, v));
  if (v.length !== length) throw new RangeError(expectedMessage(what, name, v));
  return v;
}

function expectU8(v: unknown, name: string, length: number): Uint8Array {
  const what = `Uint8Array of length ${length}`;
  if (!(v instanceof Uint8Array)) throw new TypeError(expectedMessage(what, name, v));
  if (v.length !== length) throw new RangeError(expectedMessage(what, name, v));
  return v;
}

function expectNumber(v: unknown, name: string, what: string, ok: (x: number) => boolean): number {
  if (typeof v !== 'number') throw new TypeError(expectedMessage(what, name, v));
  if (!ok(v)) throw new RangeError(expectedMessage(what, name, v));
  return v;
}

const positiveFinite = (x: number): boolean => Number.isFinite(x) && x > 0;
const nonNegativeFinite = (x: number): boolean => Number.isFinite(x) && x >= 0;
const unitInterval = (x: number): boolean => Number.isFinite(x) && x >= 0 && x < 1;

/** Values per block of the finite scan: one NaN test per block instead of one per value. */
const SCAN_BLOCK = 4096;

/**
 * Index of the first NaN or ±Inf in `a`, or -1. Sums each block of 4096 values in four float64 accumulators: any
 * NaN/Inf makes the sum non-finite, while 4096 finite float32 values (each below 3.4e38) cannot overflow float64;
 * only a block that fails is searched value by value. For the 18 M floats of 1e6 tokens at H = 16: 13.5-14.8 ms
 * (2-core EPYC dev VM, H200 host's Xeon), against 177 ms for `findIndex((v) => !Number.isFinite(v))`; the addon's
 * vectorised C++ scan, which checks again, takes 9 ms on one thread and rides along with its input copy.
 */
export function firstNonFinite(a: Float32Array): number {
  const n = a.length;
  for (let b = 0; b < n; b += SCAN_BLOCK) {
    const e = Math.min(n, b + SCAN_BLOCK);
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    let i = b;
    for (; i + 4 <= e; i += 4) {
      s0 += a[i]!;
      s1 += a[i + 1]!;
      s2 += a[i + 2]!;
      s3 += a[i + 3]!;
    }
    for (; i < e; i++) s0 += a[i]!;
    const sum = s0 + s1 + s2 + s3;
    if (sum - sum !== 0) {
      for (let j = b; j < e; j++) if (!Number.isFinite(a[j]!)) return j;
    }
  }
  return -1;
}

/** RangeError `Expected finite values for <name> but received NaN at index 17` on the first NaN/±Inf of `a`. */
function expectFinite(a: Float32Array, name: string): void {
  const i = firstNonFinite(a);
  if (i >= 0) throw new RangeError(`Expected finite values for ${name} but received ${a[i]} at index ${i}`);
}

function expectObject(v: unknown, name: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new TypeError(expectedMessage('object', name, v));
  }
  return v as Record<string, unknown>;
}

/** Checks a batch (types, lengths, then, unless `finite` is false, finite values: NaN/±Inf would route quietly to
 * Equities with uniform probabilities) and returns its token count n ≥ 1 (taken from `vol`). */
function checkBatch(batch: unknown, hidden: Hidden, finite = true, name = 'batch'): number {
  const b = expectObject(batch, name);
  if (!(b.vol instanceof Float32Array)) throw new TypeError(expectedMessage('Float32Array', `${name}.vol`, b.vol));
  const n = b.vol.length;
  if (n < 1) throw new RangeError(`Expected at least 1 token for ${name}.vol but received Float32Array of length 0`);
  const x = expectF32(b.x, `${name}.x`, n * hidden);
  const risk = expectF32(b.risk, `${name}.risk`, n);
  if (finite) {
    expectFinite(x, `${name}.x`);
    expectFinite(b.vol, `${name}.vol`);
    expectFinite(risk, `${name}.risk`);
  }
  return n;
}

/** The ArrayBuffers `pinnedBatch` took from the addon's page-locked memory. */
const pinnedBuffers = new WeakSet<ArrayBufferLike>();
/** Whether the addon's async forward reads and writes `a` in place: over a SharedArrayBuffer or pinned memory. */
const inPlace = (a: unknown): boolean => isShared(a) || (ArrayBuffer.isView(a) && pinnedBuffers.has(a.buffer));
const isInPlaceBatch = (b: TokenBatch): boolean => inPlace(b.x) && inPlace(b.vol) && inPlace(b.risk);
const isInPlaceOutput = (o: ForwardOptions): boolean =>
  o.out !== undefined && inPlace(o.out.probs) && inPlace(o.out.assign) && (o.expert !== true || inPlace(o.out.expert));

/**
 * A batch of n tokens and room for its outputs, all in SharedArrayBuffers: `forward(batch, { out, expert })` then
 * runs in place, without the copies an ordinary `Float32Array` costs (see `NativeRouter.forward`). `expert` adds the
 * n·H output.
 */
export function sharedBatch(n: number, hidden: Hidden, expert = false): { batch: TokenBatch; out: ForwardOutput } {
  const f32 = (len: number) => sharedArray(Float32Array, len);
  return {
    batch: { x: f32(n * hidden), vol: f32(n), risk: f32(n) },
    out: { probs: f32(n * D), assign: sharedArray(Uint8Array, n), ...(expert ? { expert: f32(n * hidden) } : {}) },
  };
}

/**
 * As `sharedBatch`, in page-locked (pinned) host memory where a GPU is usable: the CUDA backend's forward then moves
 * the arrays by DMA alone, with no staging copies on the host (the fastest way to route large batches on a GPU), and
 * checks the inputs for NaN/±Inf on the device. Routed in place like shared arrays, by any backend. `pinned` says
 * which memory it is: where no GPU is usable (or the addon is not built) the arrays are `sharedBatch`'s. Pinned memory
 * is scarce (it cannot be paged out): it is freed when the arrays have been collected and no forward uses them.
 */
export function pinnedBatch(n: number, hidden: Hidden, expert = false): { batch: TokenBatch; out: ForwardOutput; pinned: boolean } {
  if (!(Number.isSafeInteger(n) && n >= 1)) throw new RangeError(expectedMessage('integer ≥ 1', 'n', n));
  if (!isSupportedHidden(hidden)) throw new RangeError(expectedMessage('16 or 32', 'hidden', hidden));
  const r = load();
  const sizes = { x: n * hidden * 4, vol: n * 4, risk: n * 4, probs: n * D * 4, assign: n, ...(expert ? { expert: n * hidden * 4 } : {}) };
  const buffers: Record<string, ArrayBuffer> = {};
  if (r.ok && r.addon.cudaStatus().available && typeof r.addon.allocPinned === 'function') {
    for (const [name, bytes] of Object.entries(sizes)) {
      const b = r.addon.allocPinned(bytes);
      if (b === null) break;
      pinnedBuffers.add(b);
      buffers[name] = b;
    }
  }
  if (Object.keys(buffers).length !== Object.keys(sizes).length) return { ...sharedBatch(n, hidden, expert), pinned: false };
  const f32 = (name: string) => new Float32Array(buffers[name]!);
  return {
    batch: { x: f32('x'), vol: f32('vol'), risk: f32('risk') },
    out: { probs: f32('probs'), assign: new Uint8Array(buffers.assign!), ...(expert ? { expert: f32('expert') } : {}) },
    pinned: true,
  };
}

/** Checks the batch, labels and loss options of `lossAndGrad` and `trainSteps`; `finite` false leaves the scan for
 * NaN/±Inf to the addon, which makes it while copying the inputs. */
function lossInputs(batch: TokenBatch, hidden: Hidden, labels: Uint8Array, opts: LossOptions, finite = true): { eps: number; lam: number; sw: Float32Array | null } {
  const n = checkBatch(batch, hidden, finite);
  expectU8(labels, 'labels', n);
  const bad = labels.findIndex((c) => c >= D);
  if (bad >= 0) {
    throw new RangeError(`Expected values in 0..3 for labels but received ${labels[bad]} at index ${bad}`);
  }
  const { o, eps, lam } = lossTerms(opts);
  let sw: Float32Array | null = null;
  if (o.sampleWeight !== undefined) {
    sw = expectF32(o.sampleWeight, 'options.sampleWeight', n);
    if (finite) expectFinite(sw, 'options.sampleWeight');
  }
  return { eps, lam, sw };
}

/** Checks the label smoothing ε and reconstruction weight λ of the loss options (defaults 0). */
function lossTerms(opts: Omit<LossOptions, 'sampleWeight'>) {
  const o = expectObject(opts, 'options');
  const eps = expectNumber(o.labelSmoothing ?? 0, 'options.labelSmoothing', 'number in [0, 1)', unitInterval);
  const lam = expectNumber(o.reconWeight ?? 0, 'options.reconWeight', 'finite number >= 0', nonNegativeFinite);
  return { o, eps, lam };
}

/** AdamW options of a steps call: one learning rate for every step or one per step. */
export type StepsAdamWOptions = Omit<AdamWOptions, 'lr'> & { lr: number | ArrayLike<number> };

/** Checks the step count, focal exponent and AdamW options of `trainSteps` / `trainStepsOnSet` over n tokens. */
function stepsInputs(n: number, opts: { focalGamma?: number }, adam: StepsAdamWOptions, steps: number) {
  if (!Number.isInteger(steps) || steps < 1 || n % steps !== 0) {
    throw new RangeError(`Expected an integer ≥ 1 dividing the batch's ${n} tokens for steps but received ${String(steps)}`);
  }
  const focal = expectNumber(opts.focalGamma ?? 0, 'options.focalGamma', 'finite number >= 0', nonNegativeFinite);
  const a = adamInputs({ ...adam, lr: 1 });
  const lrIn = adam.lr;
  const lr = typeof lrIn === 'number' ? new Float32Array(steps).fill(lrIn) : Float32Array.from(lrIn);
  if (lr.length !== steps) throw new RangeError(`Expected ${steps} learning rates for options.lr but received ${lr.length}`);
  lr.forEach((v, i) => {
    if (!positiveFinite(v)) throw new RangeError(`Expected finite numbers > 0 for options.lr but received ${v} at index ${i}`);
  });
  return { focal, a, lr };
}

/** Checks AdamW options and fills their defaults. */
function adamInputs(opts: AdamWOptions): { lr: number; beta1: number; beta2: number; eps: number; wd: number; clip: number } {
  const o = expectObject(opts, 'options');
  return {
    lr: expectNumber(o.lr, 'options.lr', 'finite number > 0', positiveFinite),
    beta1: expectNumber(o.beta1 ?? 0.9, 'options.beta1', 'number in [0, 1)', unitInterval),
    beta2: expectNumber(o.beta2 ?? 0.999, 'options.beta2', 'number in [0, 1)', unitInterval),
    eps: expectNumber(o.eps ?? 1e-8, 'options.eps', 'finite number > 0', positiveFinite),
    wd: expectNumber(o.weightDecay ?? 0.01, 'options.weightDecay', 'finite number >= 0', nonNegativeFinite),
    clip: expectNumber(o.clipNorm ?? 1, 'options.clipNorm', 'finite number >= 0', nonNegativeFinite),
  };
}

/** Output arrays for a forward of n tokens: the caller's (checked) when given, else fresh ones. */
function forwardOutputs(opts: unknown, n: number, hidden: Hidden): ForwardOutput {
  if (opts === undefined) return { probs: new Float32Array(n * D), assign: new Uint8Array(n) };
  const o = expectObject(opts, 'options');
  const expert = o.expert ?? false;
  if (typeof expert !== 'boolean') {
    throw new TypeError(expectedMessage('boolean', 'options.expert', expert));
  }
  if (o.out === undefined) {
    const out: ForwardOutput = { probs: new Float32Array(n * D), assign: new Uint8Array(n) };
    if (expert) out.expert = new Float32Array(n * hidden);
    return out;
  }
  const given = expectObject(o.out, 'options.out');
  const out: ForwardOutput = {
    probs: expectF32(given.probs, 'options.out.probs', n * D),
    assign: expectU8(given.assign, 'options.out.assign', n),
  };
  if (expert) out.expert = expectF32(given.expert, 'options.out.expert', n * hidden);
  return out;
}

/** Router running in the native addon; one instance holds one parameter vector and its AdamW state. */
export class NativeRouter {
  readonly hidden: Hidden;
  readonly paramCount: number;
  /** Backend that runs: 'cuda' | 'simd-avx512' | 'simd-avx2' | 'scalar'. */
  readonly backend: string;
  /** Why `backend: 'auto'` runs on the CPU (no CUDA in this build, no driver, no device, ...); null when it got the
   * GPU or a CPU backend was asked for explicitly. */
  readonly fallbackReason: string | null;
  /** The GPU the CUDA backend runs on, e.g. 'NVIDIA H100 80GB HBM3 (sm_90)'; null on the CPU. */
  readonly device: string | null;
  private temp = 1;
  private native: AddonRouter | undefined;

  constructor(opts: RouterOptions) {
    const o = expectObject(opts, 'options');
    if (!isSupportedHidden(o.hidden)) {
      throw new RangeError(expectedMessage('16 or 32', 'options.hidden', o.hidden));
    }
    const backend = o.backend ?? 'auto';
    if (backend !== 'auto' && backend !== 'cuda' && backend !== 'simd' && backend !== 'scalar') {
      throw new RangeError(expectedMessage(`'auto', 'cuda', 'simd' or 'scalar'`, 'options.backend', backend));
    }
    const threads = o.threads ?? 1;
    expectNumber(threads, 'options.threads', 'integer in 1..64', (x) => Number.isInteger(x) && x >= 1 && x <= 64);
    const addon = loadNativeAddon();
    this.hidden = o.hidden;
    if (backend === 'cuda') {
      const gpu = addon.cudaStatus();
      if (!gpu.available) {
        throw new RouterError('BACKEND_UNAVAILABLE', `Expected a usable CUDA device for backend 'cuda' but ${gpu.reason ?? 'none was found'}`);
      }
    }
    this.native = new addon.Router(this.hidden, backend, threads as number);
    this.paramCount = this.native.paramCount();
    const info = this.native.backendInfo();
    this.backend = info.name;
    this.fallbackReason = info.fallback;
    this.device = info.device;
    if (this.paramCount !== paramLayout(this.hidden).size) {
      // A stale build of the addon: refuse it rather than read parameters at the wrong offsets.
      this.native.close();
      throw new RouterError(
        'NATIVE_UNAVAILABLE',
        `Expected ${paramLayout(this.hidden).size} parameters for the native layout but received ${this.paramCount} (rebuild with npm run build:native)`,
      );
    }
  }

  /** Calibration temperature T used by forward and loss. */
  get temperature(): number {
    return this.temp;
  }

  private open(): AddonRouter {
    if (!this.native) throw new RouterError('CLOSED', 'NativeRouter is closed');
    return this.native;
  }

  /** Copies `params` (layout of `paramLayout(hidden)`, finite values) and sets T (in [TEMPERATURE_MIN,
   * TEMPERATURE_MAX]); resets the optimizer state. */
  setParams(params: Float32Array, temperature = 1): void {
    const r = this.open();
    expectF32(params, 'params', this.paramCount);
    expectNumber(temperature, 'temperature', TEMPERATURE_TEXT, isValidTemperature);
    expectFinite(params, 'params');
    r.setParams(params, temperature);
    this.temp = temperature;
  }

  /** A copy of the current parameters. */
  getParams(): Float32Array {
    return this.open().getParams();
  }

  private prepareForward(batch: TokenBatch, opts: ForwardOptions | undefined, finite = true): [AddonRouter, ForwardOutput] {
    const r = this.open();
    const n = checkBatch(batch, this.hidden, finite);
    return [r, forwardOutputs(opts, n, this.hidden)];
  }

  /** Routes a batch on a libuv thread. The addon copies the inputs when called (they may be reused or transferred
   * at once) and copies the results into the outputs when done: an output array detached meanwhile (transferred to
   * a worker) makes the promise reject with `output buffer <name> was detached during forward`, nothing written.
   * When the inputs and the given outputs all live in SharedArrayBuffers (which cannot be detached) nothing is
   * copied: the addon reads and writes them in place, the fastest way for large batches (`sharedBatch`), and checks
   * the inputs for NaN/±Inf as it reads them, rejecting with `Expected finite values for x but received NaN at index
   * i` (x, vol or risk). */
  async forward(batch: TokenBatch, opts?: ForwardOptions): Promise<ForwardOutput> {
    const inPlaceArrays = isInPlaceBatch(batch) && opts !== undefined && isInPlaceOutput(opts);
    const [r, out] = this.prepareForward(batch, opts, !inPlaceArrays);
    await r.forward(batch.x, batch.vol, batch.risk, out.probs, out.assign, out.expert ?? null);
    return out;
  }

  /** Routes a batch on the calling thread; meant for small batches. */
  forwardSync(batch: TokenBatch, opts?: ForwardOptions): ForwardOutput {
    const [r, out] = this.prepareForward(batch, opts);
    r.forwardSync(batch.x, batch.vol, batch.risk, out.probs, out.assign, out.expert ?? null);
    return out;
  }

  /** Mean loss L = (1/N) Σ (w·CE + λ·rec) over the batch and its gradient for every parameter (docs/router.md). */
  async lossAndGrad(batch: TokenBatch, labels: Uint8Array, opts: LossOptions = {}): Promise<LossResult> {
    const r = this.open();
    const { eps, lam, sw } = lossInputs(batch, this.hidden, labels, opts);
    const grad = new Float32Array(this.paramCount);
    const res = await r.lossAndGrad(batch.x, batch.vol, batch.risk, labels, sw, eps, lam, grad);
    return { loss: res.loss, ce: res.ce, rec: res.rec, grad };
  }

  /** Whether `trainSteps` runs on this router's backend (the CUDA one). */
  get trainStepsSupported(): boolean {
    return this.open().trainStepsSupported();
  }

  /**
   * `steps` training steps in one native call (CUDA only: see `trainStepsSupported`): step k takes tokens
   * [k·n/steps, (k+1)·n/steps) of the batch (n a multiple of `steps`) and does what `lossAndGrad` then `adamwStep`
   * with learning rate `adam.lr[k]` (or `adam.lr` for every step) would, each sample weight multiplied by
   * (1 - p[label])^focalGamma at the parameters of that step, without the gradient leaving the device. The inputs are
   * copied (and checked for NaN/±Inf, the error naming x, vol, risk or sampleWeight) when called, so the caller may
   * refill them at once (`trainStepsOnSet` sends only token indices). The parameters change when the promise
   * resolves, and until then setParams, adamwStep, resetOptimizer, setTrainingSet and another steps call throw.
   */
  async trainSteps(
    batch: TokenBatch,
    labels: Uint8Array,
    opts: LossOptions & { focalGamma?: number },
    adam: StepsAdamWOptions,
    steps = 1,
  ): Promise<StepsResult> {
    const r = this.open();
    const { eps, lam, sw } = lossInputs(batch, this.hidden, labels, opts, false);
    const { focal, a, lr } = stepsInputs(batch.vol.length, opts, adam, steps);
    return await r.trainSteps(batch.x, batch.vol, batch.risk, labels, sw, eps, lam, focal, lr, a.beta1, a.beta2, a.eps, a.wd, a.clip);
  }

  /**
   * Copies a training set to the device for `trainStepsOnSet` (CUDA only: see `trainStepsSupported`), replacing any
   * set held before: n tokens (x, vol, risk as a batch; labels in 0..3) and one sample weight per class. The set may
   * come in parts, one after another (token i counts from the first part's first token), so that tokens kept in
   * several arrays (simulated and real) are never joined on the host. A NaN/±Inf in the inputs, a label out of range
   * or a class weight that is not finite ≥ 0 is a RangeError naming the part, the array and the index, and changes
   * nothing. Synchronous (about 0.3 s for the 1.7 GB of a shipped recipe's set); not while a steps call is in flight.
   */
  setTrainingSet(set: TrainingRows | readonly TrainingRows[], classWeights: ArrayLike<number>): void {
    const r = this.open();
    const parts = Array.isArray(set) ? (set as readonly TrainingRows[]) : [set as TrainingRows];
    if (parts.length === 0) throw new RangeError('Expected at least one part for set but received an empty array');
    parts.forEach((p, i) => {
      const name = parts.length > 1 ? `set[${i}]` : 'set';
      expectU8(p.labels, `${name}.labels`, checkBatch(p, this.hidden, false, name));
    });
    const cw = Float32Array.from(classWeights);
    if (cw.length !== D) throw new RangeError(`Expected ${D} class weights for classWeights but received ${cw.length}`);
    r.setTrainingSet(parts.map(({ x, vol, risk, labels }) => ({ x, vol, risk, labels })), cw);
  }

  /**
   * What `trainSteps` does with the batch of the held training set's tokens `index` (`setTrainingSet`; each index
   * below its token count, the labels the set's, each sample weight its label's class weight), the batch gathered on
   * the device: the same steps bit for bit, 4 bytes a token sent to the device instead of the token. `steps` divides
   * the index count; the indices are copied when called.
   */
  async trainStepsOnSet(index: Uint32Array, opts: Omit<LossOptions, 'sampleWeight'> & { focalGamma?: number }, adam: StepsAdamWOptions, steps = 1): Promise<StepsResult> {
    const [r, args] = this.onSetArgs(index, opts, adam, steps);
    return await r.trainStepsOnSet(...args);
  }

  /**
   * `trainStepsOnSet` on the calling thread, which waits for the steps instead of a promise (no thread of Node's pool,
   * no turn of this thread's event loop between calls): for a worker thread that trains one router and does nothing
   * else (`steps.task.ts`). The same steps bit for bit; the parameters change before it returns.
   */
  trainStepsOnSetSync(index: Uint32Array, opts: Omit<LossOptions, 'sampleWeight'> & { focalGamma?: number }, adam: StepsAdamWOptions, steps = 1): StepsResult {
    const [r, args] = this.onSetArgs(index, opts, adam, steps);
    return r.trainStepsOnSetSync(...args);
  }

  private onSetArgs(index: Uint32Array, opts: Omit<LossOptions, 'sampleWeight'> & { focalGamma?: number }, adam: StepsAdamWOptions, steps: number) {
    const r = this.open();
    if (!(index instanceof Uint32Array)) throw new TypeError(expectedMessage('Uint32Array', 'index', index));
    const { eps, lam } = lossTerms(opts);
    const { focal, a, lr } = stepsInputs(index.length, opts, adam, steps);
    return [r, [index, eps, lam, focal, lr, a.beta1, a.beta2, a.eps, a.wd, a.clip]] as const;
  }

  /** One AdamW step on the held parameters; returns the gradient norm before clipping. A NaN/±Inf gradient value
   * is a RangeError and changes nothing (one would turn every parameter into NaN through the clipping norm). */
  adamwStep(grad: Float32Array, opts: AdamWOptions): number {
    const r = this.open();
    expectF32(grad, 'grad', this.paramCount);
    const a = adamInputs(opts);
    expectFinite(grad, 'grad');
    return r.adamwStep(grad, a.lr, a.beta1, a.beta2, a.eps, a.wd, a.clip);
  }

  /** Zeroes the AdamW moments and step count. */
  resetOptimizer(): void {
    this.open().resetOptimizer();
  }

  /** Frees native memory; later calls throw RouterError('CLOSED'). Safe to call twice. */
  close(): void {
    this.native?.close();
    this.native = undefined;
  }
}
