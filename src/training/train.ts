/**
 * Training of the router on simulator data, through the same feature function the pipeline uses.
 *
 * Recipe: seeded minibatches, cross-entropy with label smoothing and class-balanced (optionally focal) sample
 * weights, plus a small expert reconstruction loss; AdamW with gradient clipping, linear warm-up then cosine decay.
 * Held-out data are other synthetic instruments: the simulator draws each instrument's parameters and the market
 * factors from (seed, ticker), so another seed gives new instruments on new market paths even where the synthetic
 * ticker names repeat. One held-out split fits the temperature by NLL, the other gives the reported metrics.
 */
import { DOMAINS } from '../domains.js';
import { MIN_HISTORY_BARS } from '../data/features/compute.js';
import { REGIME_FAMILIES, type RegimeFamily } from '../data/sim/regimes.js';
import { summarisePredictions, type EvaluationMetrics, type TickerPrediction } from './evaluate.js';
import { paramLayout, type Hidden } from '../router/layout.js';
import { simulatedTokensParallel, tokenChunks, type SimulatedTokenOptions, type TokenSet } from './tokens.js';
import { joinTokenSets, realTrainingTokens, type RealTrainingData } from './real-tokens.js';
import { PRIORITY, routerThreads } from './work-pool.js';
import { fitTemperatureOnPool } from './pool-scoring.js';
import { GATE, STEP_FIELDS, type StepsOutcome, type StepsTask } from './steps.task.js';
import { sharedArray, sharedCopy } from '../util/shared-memory.js';
import { allocSlot, BatchFeeder, BatchSampler, IndexFeeder, type BatchSlot, type SampleSource } from './batch-feeder.js';
import { initParams } from '../router/model.js';
import { NativeRouter, nativeAvailable, type StepsResult } from '../router/native.js';
import { referenceForward, referenceLossAndGrad } from '../router/reference.js';

export { simulatedTokens, type TokenSet } from './tokens.js';
export { fitTemperature, fitTemperatureNll, logProbs } from './temperature.js';
import { lruPromise } from '../util/lru.js';

const D = DOMAINS.length;

export interface TrainConfig {
  hidden: Hidden;
  /** Seeds initialisation and shuffling; data seeds derive from it unless given. */
  seed: number;
  /** Optimiser steps. */
  steps: number;
  /** Tokens (ticker-days) per minibatch. */
  batchSize: number;
  /** Peak learning rate. */
  lr: number;
  warmupSteps: number;
  /** Final learning rate as a fraction of the peak (cosine floor). */
  minLrRatio: number;
  weightDecay: number;
  clipNorm: number;
  labelSmoothing: number;
  reconWeight: number;
  /** Focal exponent γ: weights `(1 − p_true)^γ` from a forward pass; 0 turns it off. */
  focalGamma: number;
  /** Weight each class by `N / (4·N_c)` so the four domains count alike. */
  classBalance: boolean;
  /** Threads of the native trainer (SIMD backend). */
  threads: number;
  /**
   * Worker threads simulating the market histories (one seed per task) and running the real-data calibration's fits;
   * the token set and the fits are the same for any count.
   * @defaultValue `threads`
   */
  simThreads?: number;
  /** Minibatches gathered on feeder threads ahead of the steps (the same batches either way). @defaultValue true */
  feeder?: boolean;
  /** Feeder threads, each gathering every n-th batch (the same batches for any count). @defaultValue 1 */
  feederThreads?: number;
  /**
   * Where the backend has them (CUDA), `stepsPerCall` steps at a time as one native call that keeps the gradient on
   * the device (`TrainerBackend.trainSteps`): the same parameters bit for bit as separate loss and AdamW calls when
   * focalGamma is 0 (the focal weights are then computed in the kernel, from its own probabilities).
   * @defaultValue true
   */
  fusedStep?: boolean;
  /** Steps per fused call (speed only). @defaultValue 16 */
  stepsPerCall?: number;
  /**
   * Where the backend holds a training set (CUDA, `TrainerBackend.trainStepsOnSet`), the fused calls send only each
   * batch's token indices into a copy of the training set on the device, which gathers the batch there: the same
   * batches and weights bit for bit as the feeder's, without the host copying 17 MB a call (speed only).
   * @defaultValue true
   */
  deviceSet?: boolean;
  /**
   * With a training set on the device (`deviceSet`), each router's steps run on a worker thread of its own
   * (`steps.task.ts`), which waits on its calls itself: no thread of Node's pool, no turn of the main thread (which
   * the command's other work holds) between two calls. The same parameters bit for bit (speed only).
   * @defaultValue true
   */
  routerThreads?: boolean;
  data: {
    tickersPerSubtype: number;
    /** Simulated days per ticker (the feature warm-up comes out of these). */
    days: number;
    trainSeed: number;
    /**
     * Market histories in the training split: seeds `trainSeed … trainSeed + trainSeeds − 1`, seed i drawn from
     * regime family `families[i mod families.length]`.
     */
    trainSeeds: number;
    /** Regime families the training and validation histories come from (sim/regimes.ts). @defaultValue all */
    families: RegimeFamily[];
    /** First validation history (temperature fit): one seed per training family from here. */
    validationSeed: number;
    /** First held-out market history. */
    testSeed: number;
    /**
     * Held-out market histories: seeds `testSeed … testSeed + testSeeds − 1`, seed j from family
     * `REGIME_FAMILIES[j mod REGIME_FAMILIES.length]`, whatever the training families (a left-out family is scored on its own histories).
     * Errors come in regimes of one history (a calm or a stressed year), so one history alone over- or understates
     * accuracy by a point or more.
     */
    testSeeds: number;
    validationTickersPerSubtype: number;
    testTickersPerSubtype: number;
    /** Share of training instruments whose market context is removed, thinned or cut short. */
    contextDropout: number;
    /**
     * Share of the degraded contexts (simulated and real) drawn in the reference funds' listing order, as sources of
     * earlier years have them (degradeContext). Absent: 0.
     */
    contextInceptionShare?: number;
    /** Share of the simulated degraded contexts replaced by stand-ins of the history's own instruments (trainingSet). Absent: 0. */
    standInShare?: number;
    /** Share of training instruments that are new listings with only their last 60–400 bars (trainingSet). */
    newListingShare: number;
    /**
     * Share of training market histories made calmer or wilder as a whole (trainingSet's volScaleShare: every series'
     * log returns times one k in [0.5, 2]); validation and test histories are never scaled. Absent in older configs: 0.
     */
    volScaleShare?: number;
    /** The factor's range, log-uniform. Absent: [0.5, 2]. */
    volScaleRange?: [number, number];
    /** Scale only the instruments with their whole context (trainingSet's volScaleWholeContextOnly). Absent: false. */
    volScaleWholeContextOnly?: boolean;
    /**
     * A real labelled folder whose tickers join the training set (real-tokens.ts); figures on that folder must then
     * be cross-fitted (crossfit.ts). @defaultValue none: the simulator only
     */
    real?: RealTrainingData;
  };
}

export function defaultTrainConfig(overrides: { hidden?: Hidden; seed?: number; steps?: number } = {}): TrainConfig {
  const seed = overrides.seed ?? 7;
  return {
    hidden: overrides.hidden ?? 16,
    seed,
    steps: overrides.steps ?? 16_000,
    batchSize: 4096,
    lr: 5e-3,
    warmupSteps: 100,
    minLrRatio: 0.05,
    weightDecay: 0.01,
    clipNorm: 1,
    labelSmoothing: 0.05,
    reconWeight: 0.1,
    // Focal weighting (γ = 1) was the v3 recipe; with regime-wide histories and short histories it lost 0.4–0.8
    // points per day on the development folder and calibrated worse (models/README.md, recipe sweep 2026-12-04).
    focalGamma: 0,
    classBalance: true,
    threads: 2,
    data: {
      tickersPerSubtype: 4,
      days: 1000,
      trainSeed: seed,
      trainSeeds: 48,
      families: [...REGIME_FAMILIES],
      validationSeed: seed + 10_000,
      testSeed: seed + 20_000,
      testSeeds: 2 * REGIME_FAMILIES.length,
      validationTickersPerSubtype: 2,
      testTickersPerSubtype: 5,
      contextDropout: 0.5,
      // 30 % of training instruments are new listings (60–400 bars): first-250-bar accuracy on the development folder
      // rose from 90–95 % to 94–95 % per ticker across three seeds (models/README.md).
      newListingShare: 0.3,
    },
  };
}


/** `count` consecutive seeds from `first`. */
export function seedRange(first: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => first + i);
}

// ---------------------------------------------------------------------------------------------------------------
// Backend: NativeRouter when built; otherwise the float64 reference and a TypeScript AdamW with the same formula.

interface Batch {
  x: Float32Array;
  vol: Float32Array;
  risk: Float32Array;
}

interface LossOpts {
  labelSmoothing: number;
  reconWeight: number;
  sampleWeight: Float32Array;
}

interface AdamOpts {
  lr: number;
  weightDecay: number;
  clipNorm: number;
}

export interface TrainerBackend {
  readonly backend: string;
  setParams(params: Float32Array, temperature?: number): void;
  getParams(): Float32Array;
  /** Routes a batch; with `out` (probs n·4, assign n) the outputs are written there instead of into fresh arrays (the
   * native router then reads and writes in place, with no copy and no scan on this thread, when the batch and `out`
   * all live in shared memory). */
  forward(batch: Batch, out?: { probs: Float32Array; assign: Uint8Array }): Promise<{ probs: Float32Array; assign: Uint8Array }>;
  lossAndGrad(batch: Batch, labels: Uint8Array, opts: LossOpts): Promise<{ loss: number; ce: number; rec: number; grad: Float32Array }>;
  adamwStep(grad: Float32Array, opts: AdamOpts): number;
  /** `steps` times lossAndGrad then adamwStep in one call (step k on tokens [k·n/steps, (k+1)·n/steps), learning rate
   * lr[k]), the gradient staying in the backend (only where it has one). The inputs are copied when called; the
   * parameters change when the promise resolves. */
  trainSteps?(
    batch: Batch,
    labels: Uint8Array,
    opts: LossOpts & { focalGamma: number },
    adam: Omit<AdamOpts, 'lr'> & { lr: number[] },
    steps: number,
  ): Promise<StepsResult>;
  /** Copies the training set (its parts, one after another) and its class weights into the backend for
   * `trainStepsOnSet` (only with trainSteps). */
  setTrainingSet?(parts: readonly Omit<SampleSource, 'hidden'>[], classWeights: Float64Array): void;
  /** trainSteps on the held set's tokens `index` (each sample weight its label's class weight). */
  trainStepsOnSet?(
    index: Uint32Array,
    opts: Omit<LossOpts, 'sampleWeight'> & { focalGamma: number },
    adam: Omit<AdamOpts, 'lr'> & { lr: number[] },
    steps: number,
  ): Promise<StepsResult>;
  close(): void;
}

/**
 * Where a router's fused calls spent their time (the `steps:` log line): the device's work and the wait for it, the
 * wait for a thread of Node's pool (both as the addon measures them), the rest of each call (this thread's turn:
 * the call's copies and checks, the promise's settling), and the wait for the next batch (its indices or its tokens)
 * from the feeder.
 */
export class CallTimes {
  calls = 0;
  totalMs = 0;
  runMs = 0;
  queueMs = 0;
  feedMs = 0;
  #timed = 0;

  add(totalMs: number, timing?: Float64Array): void {
    this.calls += 1;
    this.totalMs += totalMs;
    if (timing !== undefined && timing.length >= 2) {
      this.#timed += 1;
      this.queueMs += timing[0]!;
      this.runMs += timing[1]!;
    }
  }

  /** `; a call of k steps: …` in ms per call, or nothing where no call was timed by the addon. */
  describe(stepsPerCall: number): string {
    if (this.calls === 0 || this.#timed !== this.calls) return '';
    const per = (ms: number) => (ms / this.calls).toFixed(2);
    const rest = this.totalMs - this.runMs - this.queueMs;
    return `; a call of ${stepsPerCall} steps: ${per(this.runMs)} ms running, ${per(this.queueMs)} waiting for a pool thread, ${per(rest)} for this thread's turn, ${per(this.feedMs)} waiting for the next batch`;
  }
}

/** Training on the float64 reference with a TypeScript AdamW (same update formula as the native one). */
export class ReferenceTrainer implements TrainerBackend {
  readonly backend = 'reference';
  private params: Float32Array;
  private temperature = 1;
  private m: Float64Array;
  private v: Float64Array;
  private t = 0;
  private readonly decay: Uint8Array;

  constructor(private readonly hidden: Hidden) {
    const layout = paramLayout(hidden);
    this.params = new Float32Array(layout.size);
    this.m = new Float64Array(layout.size);
    this.v = new Float64Array(layout.size);
    this.decay = new Uint8Array(layout.size);
    for (const t of layout.tensors) if (t.decay) this.decay.fill(1, t.offset, t.offset + t.size);
  }

  setParams(params: Float32Array, temperature = 1): void {
    this.params = params.slice();
    this.temperature = temperature;
    this.m.fill(0);
    this.v.fill(0);
    this.t = 0;
  }

  getParams(): Float32Array {
    return this.params.slice();
  }

  async forward(batch: Batch, into?: { probs: Float32Array; assign: Uint8Array }): Promise<{ probs: Float32Array; assign: Uint8Array }> {
    const out = referenceForward(this.params, this.hidden, batch, this.temperature);
    if (into === undefined) return { probs: Float32Array.from(out.probs), assign: out.assign };
    into.probs.set(out.probs);
    into.assign.set(out.assign);
    return into;
  }

  async lossAndGrad(batch: Batch, labels: Uint8Array, opts: LossOpts): Promise<{ loss: number; ce: number; rec: number; grad: Float32Array }> {
    const out = referenceLossAndGrad(this.params, this.hidden, batch, labels, opts, this.temperature);
    return { loss: out.loss, ce: out.ce, rec: out.rec, grad: Float32Array.from(out.grad) };
  }

  adamwStep(grad: Float32Array, opts: AdamOpts): number {
    const beta1 = 0.9;
    const beta2 = 0.999;
    const eps = 1e-8;
    let norm = 0;
    for (const g of grad) norm += g * g;
    norm = Math.sqrt(norm);
    const scale = opts.clipNorm > 0 && norm > opts.clipNorm ? opts.clipNorm / norm : 1;
    this.t += 1;
    const c1 = 1 - beta1 ** this.t;
    const c2 = 1 - beta2 ** this.t;
    for (let i = 0; i < grad.length; i++) {
      const g = grad[i]! * scale;
      this.m[i] = beta1 * this.m[i]! + (1 - beta1) * g;
      this.v[i] = beta2 * this.v[i]! + (1 - beta2) * g * g;
      const p = this.params[i]!;
      this.params[i] = p - opts.lr * (this.m[i]! / c1 / (Math.sqrt(this.v[i]! / c2) + eps) + opts.weightDecay * p * this.decay[i]!);
    }
    return norm;
  }

  close(): void {}
}

/** The native router when its addon loads, else the reference (with a warning: it is orders of magnitude slower). */
export function createTrainerBackend(hidden: Hidden, threads: number, warn: (m: string) => void): TrainerBackend {
  const available = nativeAvailable();
  if (available.ok) {
    const router = new NativeRouter({ hidden, threads });
    return {
      backend: router.backend,
      setParams: (p, t) => router.setParams(p, t),
      getParams: () => router.getParams(),
      forward: (b, out) => router.forward(b, out !== undefined ? { out } : undefined),
      lossAndGrad: (b, l, o) => router.lossAndGrad(b, l, o),
      adamwStep: (g, o) => router.adamwStep(g, o),
      ...(router.trainStepsSupported
        ? {
            trainSteps: (b, l, o, a, k) => router.trainSteps(b, l, o, a, k),
            setTrainingSet: (set, cw) => router.setTrainingSet(set, cw),
            trainStepsOnSet: (i, o, a, k) => router.trainStepsOnSet(i, o, a, k),
          }
        : {}),
      close: () => router.close(),
    };
  }
  warn(`native router unavailable (${available.reason}); training with the TypeScript reference (slow)`);
  return new ReferenceTrainer(hidden);
}

// ---------------------------------------------------------------------------------------------------------------
// Schedule, weights, temperature.

/** Linear warm-up to `lr`, then cosine decay to `lr·minLrRatio` at the last step. */
export function learningRate(step: number, c: Pick<TrainConfig, 'lr' | 'warmupSteps' | 'minLrRatio' | 'steps'>): number {
  if (step < c.warmupSteps) return (c.lr * (step + 1)) / c.warmupSteps;
  const span = Math.max(1, c.steps - c.warmupSteps - 1);
  const progress = Math.min(1, (step - c.warmupSteps) / span);
  return c.lr * (c.minLrRatio + (1 - c.minLrRatio) * 0.5 * (1 + Math.cos(Math.PI * progress)));
}

/** Per-class weights `N / (4·N_c)` (classes with no token get 0). */
export function classWeights(labels: Uint8Array): Float64Array {
  const counts = new Float64Array(D);
  // An indexed loop: a few times faster than for…of over the millions of labels of a training set (the main thread's
  // time, which other routers' work waits for).
  for (let i = 0; i < labels.length; i++) counts[labels[i]!]! += 1;
  const present = counts.filter((c) => c > 0).length;
  return counts.map((c) => (c > 0 ? labels.length / (present * c) : 0));
}

// ---------------------------------------------------------------------------------------------------------------
// The training loop.

export interface TrainStepLog {
  step: number;
  lr: number;
  loss: number;
  ce: number;
  rec: number;
  gradNorm: number;
}

export interface TrainResult {
  config: TrainConfig;
  backend: string;
  params: Float32Array;
  temperature: number;
  history: TrainStepLog[];
  /** Mean training loss of the first and last 5 % of steps. */
  lossStart: number;
  lossEnd: number;
  seconds: { data: number; train: number; total: number };
  data: { train: SplitInfo; validation: SplitInfo; test: SplitInfo };
  validation: EvaluationMetrics;
  test: EvaluationMetrics;
  /** Held-out per-day accuracy by simulator sub-type (where the domains overlap). */
  testBySubtype: Record<string, number>;
  /** Held-out per-day accuracy by market history (simulator seed). */
  testBySeed: Record<string, number>;
  /** Held-out metrics by regime family of the history (per day, per ticker, calibration). */
  testByFamily: Record<string, FamilyMetrics>;
  /** Held-out per-day accuracy by the history a token had: `60-119`, `120-249`, `250+` bars. */
  testByHistory: Record<string, number>;
  /** With `hooks.keepSets`: the validation and test token sets. */
  sets?: { validation: TokenSet; test: TokenSet };
}

/** The held-out breakdowns of `TrainResult` for predictions `testPreds` (one per ticker of `test`, in its order). */
export type HeldOutBreakdown = Pick<TrainResult, 'testBySubtype' | 'testBySeed' | 'testByFamily' | 'testByHistory'>;

/** Bands of history length (bars up to and including the token's) that the held-out accuracy is split by. */
export const HISTORY_BANDS: readonly { name: string; below: number }[] = [
  { name: '60-119', below: 120 },
  { name: '120-249', below: 250 },
  { name: '250+', below: Number.POSITIVE_INFINITY },
];

export interface FamilyMetrics {
  days: number;
  tickers: number;
  perDay: number;
  perTicker: number;
  ece: number;
  /** Per-day accuracy by simulator sub-type within the family's histories. */
  bySubtype: Record<string, number>;
}

export interface SplitInfo {
  seeds: number[];
  tickers: number;
  tokens: number;
  tokensByClass: number[];
}

function splitInfo(set: TokenSet, seeds: number[]): SplitInfo {
  const byClass = new Array<number>(D).fill(0);
  for (const l of set.labels) byClass[l]! += 1;
  return { seeds, tickers: set.tickers.length, tokens: set.size, tokensByClass: byClass };
}

/**
 * Routes a token set into one output in shared memory, a chunk at a time (one per market history,
 * `chunkedTokenSet`), each into its place: x, vol and risk are never joined (for a held-out test set, 300 MB written
 * on this thread), and chunks in shared memory (the simulator's) are read and written in place by the native router,
 * not copied and scanned on this thread. Each token's outputs are the same in any batch.
 */
export async function routeTokenSet(backend: TrainerBackend, set: TokenSet): Promise<{ probs: Float32Array; assign: Uint8Array }> {
  const out = { probs: sharedArray(Float32Array, set.size * D), assign: sharedArray(Uint8Array, set.size) };
  let at = 0;
  for (const c of tokenChunks(set)) {
    const n = c.vol.length;
    if (n > 0) await backend.forward({ x: c.x, vol: c.vol, risk: c.risk }, { probs: out.probs.subarray(at * D, (at + n) * D), assign: out.assign.subarray(at, at + n) });
    at += n;
  }
  return out;
}

/** `routeTokenSet`, its outputs also split per ticker for `summarisePredictions`. */
export async function predictTokenSet(backend: TrainerBackend, set: TokenSet): Promise<{ preds: TickerPrediction[]; probs: Float32Array }> {
  const out = await routeTokenSet(backend, set);
  return { preds: perTicker(set, out.probs, out.assign), probs: out.probs };
}

/** Splits one forward's outputs over `set` per ticker (each ticker's own copy). */
export function perTicker(set: TokenSet, probs: Float32Array, assign: Uint8Array): TickerPrediction[] {
  return set.tickers.map((t) => ({ ticker: t.ticker, label: t.label, assign: assign.slice(t.start, t.end), probs: probs.slice(t.start * D, t.end * D) }));
}

export interface TrainHooks {
  log?: (message: string) => void;
  warn?: (message: string) => void;
  /** Called every `logEvery` steps. @defaultValue 100 */
  onStep?: (s: TrainStepLog) => void;
  logEvery?: number;
  /** Keep the validation and test token sets in the result (`sets`), to score other routers on them. */
  keepSets?: boolean;
  /**
   * Called as the steps begin, the training set made. `hostCoresFree`: the steps take no host threads (the batches
   * are gathered on the device from a set held there), so other work may use the cores meanwhile.
   */
  onStepsStart?: (info: { hostCoresFree: boolean }) => void;
  /**
   * The steps begin once this settles (fulfilled: go; rejected: this router fails too), everything before them done
   * meanwhile: the training set made (on the GPU also sent to the device) and the first batch drawn. Routers trained
   * one after another on one card (a fold's members) are so prepared while the one before them trains.
   */
  stepsAfter?: Promise<unknown>;
}

/**
 * One router's steps on a thread of its own (`steps.task.ts`, `routerThreads`): its training set's chunks go there in
 * shared memory (a chunk made elsewhere is copied there first) with the learning rate of every step (`call.lr`); the
 * trained parameters and each step's losses come back.
 */
async function stepsOnThread(
  config: TrainConfig,
  params: Float32Array,
  train: TokenSet,
  cw: Float64Array,
  call: Pick<StepsTask, 'batch' | 'group' | 'lr' | 'loss' | 'adam'>,
  after?: Promise<unknown>,
): Promise<StepsOutcome> {
  const parts = tokenChunks(train).map((c) => ({ x: sharedCopy(c.x), vol: sharedCopy(c.vol), risk: sharedCopy(c.risk), labels: sharedCopy(c.labels) }));
  const task: StepsTask = { hidden: config.hidden, params, parts, classWeights: cw, seed: config.seed, steps: config.steps, ...call };
  if (after !== undefined) {
    const gate = (task.gate = new Int32Array(new SharedArrayBuffer(4)));
    const open = (v: number) => {
      Atomics.store(gate, 0, v);
      Atomics.notify(gate, 0);
    };
    after.then(() => open(GATE.go), () => open(GATE.stop));
  }
  return (await routerThreads().run(task)) as StepsOutcome;
}

/** Batches gathered on this thread, between steps, `group` at a time into one reused slot (the last group only the
 * batches left of `steps`). */
function gatherHere(sampler: BatchSampler, B: number, H: number, group: number, steps: number): () => Promise<BatchSlot> {
  const full = allocSlot(B * group, H);
  let done = 0;
  return async () => {
    const k = Math.min(group, steps - done);
    const slot = k === group ? full : allocSlot(B * k, H);
    done += k;
    sampler.fill(slot);
    return slot;
  };
}

/**
 * The simulated token sets of the latest trainRouter calls, by what they were simulated from. An ensemble's members
 * and every fold router of its cross-fit train and score on the same simulated histories (only the seed and the real
 * tickers differ; each member has its own histories), so the shipped command simulates each member's training,
 * validation and test histories once instead of for each of its six routers: the same bytes (nothing writes into a
 * TokenSet, and the simulation does not depend on the thread count). Nine entries: the three sets of three members
 * (about 1.3 GB at the shipped recipe's sizes, held until the process ends or newer sets push them out).
 */
const SIM_CACHE_SIZE = 9;
const simCache = new Map<string, Promise<TokenSet>>();
const simCacheStats = { hits: 0, misses: 0 };

/** How often trainRouter found its simulated sets already made, and how often it simulated them. */
export function simulationCacheStats(): { hits: number; misses: number } {
  return { ...simCacheStats };
}

/** Lets go of the simulated sets held for later routers (the next trainRouter simulates its own again). */
export function clearSimulationCache(): void {
  simCache.clear();
}

function cachedSimulatedTokens(hidden: Hidden, opts: SimulatedTokenOptions, threads: number, priority: number = PRIORITY.training): Promise<TokenSet> {
  const { familyOf, ...rest } = opts;
  const key = JSON.stringify({ hidden, ...rest, families: opts.seeds.map((s) => familyOf?.(s) ?? 'recent') });
  return lruPromise(simCache, key, SIM_CACHE_SIZE, () => simulatedTokensParallel(hidden, opts, threads, priority), simCacheStats);
}

/**
 * Starts making the data that routers of `configs` train and are scored on, into the caches their `trainRouter` calls
 * read: each config's training set (its simulated histories, then its real rows), the first config's first, then
 * the validation and test sets of the first `heldOutOf` configs (every config's by default; an ensemble scores only
 * its first member's), in that order of priority on the process's pool of worker threads (work-pool.ts), so each
 * router can start its steps as early as the host's cores allow (the held-out sets are read after the steps). Those
 * calls then find their sets made or in the making: the same bytes. A failure surfaces there (a failed set leaves
 * the cache).
 */
export function prefetchSimulation(configs: TrainConfig | readonly TrainConfig[], heldOutOf = Infinity): void {
  const list = Array.isArray(configs) ? (configs as readonly TrainConfig[]) : [configs as TrainConfig];
  const quiet = () => undefined;
  const plans = list.map((config) => ({ config, r: simulationRequests(config), threads: config.simThreads ?? config.threads }));
  plans.forEach(({ config, r, threads }, i) => {
    void cachedSimulatedTokens(config.hidden, r.train, threads, PRIORITY.training + i).catch(quiet);
    const real = realTrainingData(config);
    if (real !== undefined) void realTrainingTokens(config.hidden, real, config.seed, undefined, threads, PRIORITY.training + i).catch(quiet);
  });
  for (const { config, r, threads } of plans.slice(0, heldOutOf)) {
    for (const o of [r.validation, r.test]) void cachedSimulatedTokens(config.hidden, o, threads, PRIORITY.later).catch(quiet);
  }
}

/** The real folder a router of `config` trains on, with the recipe's context order (`realTrainingTokens`' input). */
function realTrainingData(config: TrainConfig): RealTrainingData | undefined {
  const d = config.data;
  if (d.real === undefined) return undefined;
  return d.contextInceptionShare ? { ...d.real, contextInceptionShare: d.contextInceptionShare } : d.real;
}

/** The simulated sets a router of `config` trains and is scored on, as `cachedSimulatedTokens` requests. */
function simulationRequests(config: TrainConfig): {
  train: SimulatedTokenOptions;
  validation: SimulatedTokenOptions;
  test: SimulatedTokenOptions;
  validationSeeds: number[];
  testSeeds: number[];
} {
  const d = config.data;
  const byIndex = (first: number, list: readonly RegimeFamily[]) => (seed: number) => list[(seed - first) % list.length]!;
  const validationSeeds = seedRange(d.validationSeed, d.families.length);
  const testSeeds = seedRange(d.testSeed, d.testSeeds);
  return {
    train: {
      seeds: seedRange(d.trainSeed, d.trainSeeds),
      tickersPerSubtype: d.tickersPerSubtype,
      days: d.days,
      contextDropout: d.contextDropout,
      ...(d.contextInceptionShare ? { contextInceptionShare: d.contextInceptionShare } : {}),
      ...(d.standInShare ? { standInShare: d.standInShare } : {}),
      newListingShare: d.newListingShare,
      volScaleShare: d.volScaleShare ?? 0,
      ...(d.volScaleRange !== undefined ? { volScaleRange: d.volScaleRange } : {}),
      ...(d.volScaleWholeContextOnly === true ? { volScaleWholeContextOnly: true } : {}),
      familyOf: byIndex(d.trainSeed, d.families),
    },
    validation: { seeds: validationSeeds, tickersPerSubtype: d.validationTickersPerSubtype, days: d.days, familyOf: byIndex(d.validationSeed, d.families) },
    test: { seeds: testSeeds, tickersPerSubtype: d.testTickersPerSubtype, days: d.days, familyOf: byIndex(d.testSeed, REGIME_FAMILIES) },
    validationSeeds,
    testSeeds,
  };
}

/** What `fitRouter` hands to its `finish` step: the trained backend (still open) and the data it was trained on. */
interface Fitted {
  backend: TrainerBackend;
  params: Float32Array;
  history: TrainStepLog[];
  train: TokenSet;
  /** Absent where the fit was asked for its parameters alone (`heldOut: false`). */
  held?: { validation: TokenSet; test: TokenSet; validationSeeds: number[]; testSeeds: number[] };
  /** `performance.now()` at the start, after the data and after the last step. */
  marks: { t0: number; t1: number; t2: number };
}

/**
 * Trains one router and scores it on its held-out simulator histories (validation: the simulator temperature; test:
 * every held-out figure).
 */
export async function trainRouter(config: TrainConfig, hooks: TrainHooks = {}): Promise<TrainResult> {
  return fitRouter(config, hooks, true, (fitted) => scoreRouter(config, hooks, fitted));
}

/**
 * Trains one router for its parameters alone: no held-out histories are simulated or scored (a cross-fitting fold's
 * routers, whose held-out figures nobody reads). The parameters are those `trainRouter` gives for the same config,
 * bit for bit: the training data, initialisation and batches do not depend on the held-out sets.
 */
export async function trainRouterParams(config: TrainConfig, hooks: TrainHooks = {}): Promise<Float32Array> {
  return fitRouter(config, hooks, false, async ({ params }) => params);
}

async function fitRouter<T>(config: TrainConfig, hooks: TrainHooks, heldOut: boolean, finish: (fitted: Fitted) => Promise<T>): Promise<T> {
  const log = hooks.log ?? (() => undefined);
  const warn = hooks.warn ?? log;
  const t0 = performance.now();
  const H = config.hidden;
  const d = config.data;
  if (!Number.isInteger(d.days) || d.days < MIN_HISTORY_BARS) {
    throw new RangeError(`Expected integer ≥ the minimum history (${MIN_HISTORY_BARS} bars) for data.days but received ${String(d.days)}`);
  }
  if (!Number.isInteger(d.testSeeds) || d.testSeeds < 1) {
    throw new RangeError(`Expected integer ≥ 1 for data.testSeeds but received ${String(d.testSeeds)}`);
  }
  const requests = simulationRequests(config);
  const { validationSeeds, testSeeds } = requests;
  const inTrain = (seed: number) => seed >= d.trainSeed && seed < d.trainSeed + d.trainSeeds;
  if (validationSeeds.some(inTrain) || testSeeds.some(inTrain) || testSeeds.some((s) => validationSeeds.includes(s))) {
    throw new RangeError(
      `Expected training seeds ${d.trainSeed}..${d.trainSeed + d.trainSeeds - 1} to exclude the held-out seeds ${validationSeeds.join(',')} and ${testSeeds.join(',')}`,
    );
  }
  if (d.families.length === 0 || !d.families.every((f) => (REGIME_FAMILIES as readonly string[]).includes(f))) {
    throw new RangeError(`Expected a non-empty list of ${REGIME_FAMILIES.join(', ')} for data.families but received ${JSON.stringify(d.families)}`);
  }
  const simThreads = config.simThreads ?? config.threads;
  // The simulated and the real tokens are made at once (on one pool of threads), then joined as one set: on the host
  // only if something reads its series there (the device set takes their chunks).
  const simulating = cachedSimulatedTokens(H, requests.train, simThreads);
  const realData = realTrainingData(config);
  const realRows = realData === undefined ? undefined : realTrainingTokens(H, realData, config.seed, warn, simThreads);
  realRows?.catch(() => undefined); // awaited below unless the simulation failed first
  const simulated = await simulating;
  const train = joinTokenSets(realRows === undefined ? [simulated] : [simulated, await realRows]);
  const t1 = performance.now();
  const real = train.size - simulated.size;
  log(`data: train ${train.tickers.length} tickers / ${train.size} days${real > 0 ? ` (${real} of them real)` : ''} (${((t1 - t0) / 1000).toFixed(1)} s)`);
  const nonEmpty = (name: string, set: TokenSet) => {
    if (set.size === 0) throw new RangeError(`Expected ${name} tokens but the simulator gave none for ${JSON.stringify(d)}`);
    return set;
  };
  nonEmpty('training', train);
  // The held-out sets are read only after the steps: a router whose training set is made starts at once, and the
  // held-out histories may be simulated meanwhile (prefetchSimulation) or then.
  const heldSets = async (): Promise<Fitted['held']> => {
    if (!heldOut) return undefined;
    const w = performance.now();
    const validation = nonEmpty('validation', await cachedSimulatedTokens(H, requests.validation, simThreads));
    const test = nonEmpty('test', await cachedSimulatedTokens(H, requests.test, simThreads));
    log(`held-out sets: validation ${validation.tickers.length} / ${validation.size}, test ${test.tickers.length} / ${test.size} (${((performance.now() - w) / 1000).toFixed(1)} s after the steps)`);
    return { validation, test, validationSeeds, testSeeds };
  };

  const backend = createTrainerBackend(H, config.threads, warn);
  try {
    backend.setParams(initParams(H, config.seed), 1);
    const cw = config.classBalance ? classWeights(train.labels) : new Float64Array(D).fill(1);
    const B = Math.min(config.batchSize, train.size);
    const history: TrainStepLog[] = [];
    const logEvery = hooks.logEvery ?? 100;
    // With a fused backend, `group` steps go to the device in one call. Batches come from feeder threads a few
    // calls ahead (batch-feeder.ts), or, with `feeder: false`, are gathered here between calls: the same batches in
    // the same order either way.
    const fused = config.fusedStep !== false ? backend.trainSteps?.bind(backend) : undefined;
    const group = fused !== undefined ? (config.stepsPerCall ?? 16) : 1;
    if (!Number.isInteger(group) || group < 1) throw new RangeError(`Expected integer ≥ 1 for stepsPerCall but received ${String(group)}`);
    const adam = { weightDecay: config.weightDecay, clipNorm: config.clipNorm };
    const lossOpts = { labelSmoothing: config.labelSmoothing, reconWeight: config.reconWeight };
    const callTimes = new CallTimes();
    const record = (entry: TrainStepLog) => {
      if (!Number.isFinite(entry.loss)) throw new RangeError(`Expected finite loss at step ${entry.step} but received ${entry.loss}`);
      history.push(entry);
      if (entry.step % logEvery === 0 || entry.step === config.steps - 1) hooks.onStep?.(entry);
    };
    // One fused call of k steps from `step`: its learning rates, the call (which copies its inputs), the inputs' slot
    // handed back at once, then each step's record.
    const fusedCall = async (step: number, k: number, call: (lr: number[]) => ReturnType<NonNullable<typeof fused>>, release: () => void) => {
      const lr = Array.from({ length: k }, (_, j) => learningRate(step + j, config));
      const c0 = performance.now();
      const pending = call(lr);
      release();
      const out = await pending;
      callTimes.add(performance.now() - c0, out.timing);
      for (let j = 0; j < k; j++) {
        record({ step: step + j, lr: lr[j]!, loss: out.loss[j]!, ce: out.ce[j]!, rec: out.rec[j]!, gradNorm: out.gradNorm[j]! });
      }
    };
    // Where the backend holds a training set (CUDA), the set goes to the device once and each call sends only its
    // batches' token indices, drawn in the feeders' order on a feeder thread (an epoch's shuffle of millions of tokens
    // would hold this thread, which the folds trained at once share). Otherwise the batches themselves.
    const onSet = fused !== undefined && config.deviceSet !== false ? backend.trainStepsOnSet?.bind(backend) : undefined;
    // With the set on the device, the steps run on a thread of their own unless asked otherwise (steps.task.ts).
    const onThread = onSet !== undefined && config.routerThreads !== false;
    // The chunks as they were made (each market history's, each real row's): none is joined on the host.
    if (onSet !== undefined && !onThread) backend.setTrainingSet!(tokenChunks(train), cw);
    const indices = onSet !== undefined && !onThread ? new IndexFeeder(train.size, { seed: config.seed, batch: B, steps: config.steps, group }) : undefined;
    const feeder =
      onSet !== undefined || config.feeder === false
        ? undefined
        : new BatchFeeder(train, cw, { seed: config.seed, batch: B, steps: config.steps, threads: config.feederThreads ?? 1, group });
    const nextBatch =
      onSet !== undefined ? undefined : feeder !== undefined ? () => feeder.next() : gatherHere(new BatchSampler(train, cw, config.seed), B, H, group, config.steps);
    hooks.onStepsStart?.({ hostCoresFree: onSet !== undefined });
    // How busy the process's JS thread was while these steps ran (every router's calls wait for it between calls).
    const elu0 = performance.eventLoopUtilization();
    let threadNote = '';
    if (onThread) {
      const lr = Float64Array.from({ length: config.steps }, (_, step) => learningRate(step, config));
      const loss = { ...lossOpts, focalGamma: config.focalGamma };
      const out = await stepsOnThread(config, backend.getParams(), train, cw, { batch: B, group, lr, loss, adam }, hooks.stepsAfter);
      const h = out.history;
      for (let step = 0; step < config.steps; step++) {
        const at = STEP_FIELDS.length * step;
        record({ step, lr: lr[step]!, loss: h[at]!, ce: h[at + 1]!, rec: h[at + 2]!, gradNorm: h[at + 3]! });
      }
      backend.setParams(out.params, 1);
      const per = (ms: number) => (ms / Math.max(1, out.calls)).toFixed(2);
      const gated = hooks.stepsAfter !== undefined ? `, then ${(out.gateMs / 1000).toFixed(2)} s waiting for the router before it` : '';
      threadNote = `; on its own thread: the set on the device in ${(out.setMs / 1000).toFixed(2)} s${gated}, a call of ${group} steps: ${per(out.runMs)} ms running, ${per(out.feedMs)} waiting for the next batch`;
    } else {
      try {
        // Inside the try: the feeders made above are closed if the router before this one failed.
        if (hooks.stepsAfter !== undefined) {
          const g0 = performance.now();
          await hooks.stepsAfter;
          threadNote = `; ${((performance.now() - g0) / 1000).toFixed(2)} s waiting for the router before it`;
        }
        for (let step = 0; step < config.steps; ) {
          if (indices !== undefined) {
            const i0 = performance.now();
            const index = await indices.next();
            callTimes.feedMs += performance.now() - i0;
            const k = index.length / B;
            await fusedCall(step, k, (lr) => onSet!(index, { ...lossOpts, focalGamma: config.focalGamma }, { ...adam, lr }, k), () => indices.release());
            step += k;
            continue;
          }
          const f0 = performance.now();
          const slot = await nextBatch!();
          callTimes.feedMs += performance.now() - f0;
          const { labels: blab, weights: bw } = slot;
          const batch = { x: slot.x, vol: slot.vol, risk: slot.risk };
          const k = slot.vol.length / B;
          if (fused !== undefined) {
            await fusedCall(step, k, (lr) => fused(batch, blab, { ...lossOpts, sampleWeight: bw, focalGamma: config.focalGamma }, { ...adam, lr }, k), () => feeder?.release());
          } else {
            if (config.focalGamma > 0) {
              const { probs } = await backend.forward(batch);
              for (let j = 0; j < B; j++) bw[j]! *= (1 - probs[j * D + blab[j]!]!) ** config.focalGamma;
            }
            const out = await backend.lossAndGrad(batch, blab, { ...lossOpts, sampleWeight: bw });
            // The native trainer has read the batch: its slot may be refilled while the optimiser steps.
            feeder?.release();
            if (!Number.isFinite(out.loss)) throw new RangeError(`Expected finite loss at step ${step} but received ${out.loss}`);
            const lr = learningRate(step, config);
            const gradNorm = backend.adamwStep(out.grad, { ...adam, lr });
            record({ step, lr, loss: out.loss, ce: out.ce, rec: out.rec, gradNorm });
          }
          step += k;
        }
      } finally {
        await indices?.close();
        await feeder?.close();
      }
    }
    const t2 = performance.now();
    log(`steps: ${config.steps} in ${((t2 - t1) / 1000).toFixed(1)} s (${backend.backend}${onSet !== undefined ? ', batches gathered on the device' : ''}${callTimes.describe(group)}${threadNote}; the JS thread busy ${(100 * performance.eventLoopUtilization(elu0).utilization).toFixed(0)} % of the time)`);
    const held = await heldSets();
    return await finish({ backend, params: backend.getParams(), history, train, ...(held !== undefined ? { held } : {}), marks: { t0, t1, t2 } });
  } finally {
    backend.close();
  }
}

/** The held-out scoring of `trainRouter`: the simulator temperature on validation, then every test figure. */
async function scoreRouter(config: TrainConfig, hooks: TrainHooks, fitted: Fitted): Promise<TrainResult> {
  const { backend, params, history, train, marks } = fitted;
  const { validation, test, validationSeeds, testSeeds } = fitted.held!;
  const d = config.data;
  backend.setParams(params, 1);
  // On a pool thread: the JS thread meanwhile serves the other routers of the command.
  const temperature = await fitTemperatureOnPool((await routeTokenSet(backend, validation)).probs, validation.labels, config.simThreads ?? config.threads);
  backend.setParams(params, temperature);
  const validationMetrics = summarisePredictions((await predictTokenSet(backend, validation)).preds);
  const testPreds = (await predictTokenSet(backend, test)).preds;
  const testMetrics = summarisePredictions(testPreds);
  const breakdown = heldOutBreakdown(test, testPreds);
  const tail = Math.max(1, Math.floor(history.length * 0.05));
  const mean = (xs: TrainStepLog[]) => xs.reduce((a, s) => a + s.loss, 0) / Math.max(xs.length, 1);
  const t3 = performance.now();
  hooks.log?.(`held-out scoring: ${((t3 - marks.t2) / 1000).toFixed(1)} s`);
  return {
    config,
    backend: backend.backend,
    params,
    temperature,
    history,
    lossStart: mean(history.slice(0, tail)),
    lossEnd: mean(history.slice(-tail)),
    seconds: { data: (marks.t1 - marks.t0) / 1000, train: (marks.t2 - marks.t1) / 1000, total: (t3 - marks.t0) / 1000 },
    data: {
      train: splitInfo(train, seedRange(d.trainSeed, d.trainSeeds)),
      validation: splitInfo(validation, validationSeeds),
      test: splitInfo(test, testSeeds),
    },
    validation: validationMetrics,
    test: testMetrics,
    ...breakdown,
    ...(hooks.keepSets ? { sets: { validation, test } } : {}),
  };
}

export function heldOutBreakdown(test: TokenSet, testPreds: readonly TickerPrediction[]): HeldOutBreakdown {
  // Right days and days, by sub-type (over all histories and within each family) and by market history.
  const bySubtype = new Map<string, [number, number]>();
  const byFamilySubtype = new Map<string, Map<string, [number, number]>>();
  const bySeed = new Map<string, [number, number]>();
  // Right days and days per history band (HISTORY_BANDS, in order of `below`).
  const bandRight = HISTORY_BANDS.map(() => 0);
  const bandDays = HISTORY_BANDS.map(() => 0);
  const tally = (map: Map<string, [number, number]>, key: string, right: number, days: number) => {
    const acc = map.get(key) ?? [0, 0];
    acc[0] += right;
    acc[1] += days;
    map.set(key, acc);
  };
  test.tickers.forEach((t, i) => {
    const assign = testPreds[i]!.assign;
    let right = 0;
    // Token j of an instrument is its bar j + MIN_HISTORY_BARS − 1: it saw j + MIN_HISTORY_BARS bars.
    for (let j = 0, band = 0; j < assign.length; j++) {
      while (j + MIN_HISTORY_BARS >= HISTORY_BANDS[band]!.below) band++;
      const hit = assign[j] === t.label ? 1 : 0;
      right += hit;
      bandRight[band]! += hit;
      bandDays[band]! += 1;
    }
    tally(bySubtype, t.subtype, right, t.end - t.start);
    if (!byFamilySubtype.has(t.family)) byFamilySubtype.set(t.family, new Map());
    tally(byFamilySubtype.get(t.family)!, t.subtype, right, t.end - t.start);
    tally(bySeed, String(t.seed), right, t.end - t.start);
  });
  const rate = ([c, n]: [number, number]) => (n > 0 ? c / n : 0);
  const testByFamily: Record<string, FamilyMetrics> = {};
  for (const family of REGIME_FAMILIES) {
    const preds = testPreds.filter((_, i) => test.tickers[i]!.family === family);
    if (preds.length === 0) continue;
    const m = summarisePredictions(preds);
    const subtypes = Object.fromEntries([...byFamilySubtype.get(family)!].map(([k, v]) => [k, rate(v)]));
    testByFamily[family] = { days: m.days, tickers: m.tickers, perDay: m.perDay.accuracy, perTicker: m.perTicker.accuracy, ece: m.ece, bySubtype: subtypes };
  }
  return {
    testBySubtype: Object.fromEntries([...bySubtype].map(([k, v]) => [k, rate(v)])),
    testBySeed: Object.fromEntries([...bySeed].map(([k, v]) => [k, rate(v)])),
    testByFamily,
    testByHistory: Object.fromEntries(HISTORY_BANDS.map((b, k) => [b.name, rate([bandRight[k]!, bandDays[k]!])])),
  };
}

/** Compact metrics for the model file and the model card (no per-ticker table). */
export function metricsSummary(m: EvaluationMetrics): Record<string, unknown> {
  const byClass = (l: EvaluationMetrics['perDay']) => Object.fromEntries(DOMAINS.map((name) => [name, round(l.byClass[name].accuracy)]));
  return {
    tickers: m.tickers,
    days: m.days,
    perDay: { accuracy: round(m.perDay.accuracy), byClass: byClass(m.perDay) },
    perTicker: { accuracy: round(m.perTicker.accuracy), byClass: byClass(m.perTicker) },
    confusion: m.confusion,
    meanConfidence: round(m.meanConfidence),
    ece: round(m.ece),
    nll: round(m.nll),
  };
}

function round(v: number | null): number | null {
  return v === null ? null : Math.round(v * 10_000) / 10_000;
}
