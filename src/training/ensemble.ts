/**
 * Training an ensemble: one router per seed with the same recipe (each its own training histories, initialisation and
 * shuffling), then the members scored together on the first member's validation and test histories, their mean
 * probabilities read at one simulator temperature (src/router/ensemble.ts). Only the first member's held-out
 * histories are simulated: the others are trained for their parameters alone, and each is also scored alone on the
 * first member's test histories (the same histories for every member, from the ensemble's own forwards).
 */
import { NUM_DOMAINS as D } from '../domains.js';
import { majorityDomain, summarisePredictions, type EvaluationMetrics } from './evaluate.js';
import { averageMembersOnPool, fitTemperatureOnPool } from './pool-scoring.js';
import { createTrainerBackend, heldOutBreakdown, perTicker, prefetchSimulation, routeTokenSet, trainRouter, trainRouterParams, type HeldOutBreakdown, type TokenSet, type TrainConfig, type TrainHooks, type TrainResult } from './train.js';

/** The recipe `config` with `seed` in place of its own: initialisation, shuffling and every simulated split. */
export function memberConfig(config: TrainConfig, seed: number): TrainConfig {
  return {
    ...config,
    seed,
    data: { ...config.data, trainSeed: seed, validationSeed: seed + 10_000, testSeed: seed + 20_000 },
  };
}

export interface EnsembleResult extends HeldOutBreakdown {
  /** The first member's own training result (its held-out figures at its own temperature, on the ensemble's histories). */
  first: TrainResult;
  /** Every member's parameters, in seed order. */
  params: Float32Array[];
  /** Each member alone on the first member's test histories (its argmax; per day and per ticker by majority). */
  memberTest: { perDay: number; perTicker: number }[];
  /** Each member's seconds from its start to its parameters (the first's with its held-out scoring). */
  memberSeconds: number[];
  /** The ensemble's simulator temperature, fitted on the first member's validation histories. */
  temperature: number;
  validation: EvaluationMetrics;
  /** The ensemble on the first member's test histories. */
  test: EvaluationMetrics;
}


/**
 * The members' parameters alone, one per seed in order: what `trainEnsemble` trains, without the held-out scoring
 * (a cross-fitting fold's ensemble is only ever read on its left-out tickers). An aborted `signal` stops it before the
 * next member's steps (with the signal's reason).
 */
export async function trainMemberParams(config: TrainConfig, seeds: readonly number[], hooks: TrainHooks = {}, signal?: AbortSignal): Promise<Float32Array[]> {
  // Member i + 1 is prepared while member i trains (its data as its seed's histories come, and on the GPU its set on
  // the device and its first batch), and its steps begin only when member i's are done (`stepsAfter`; not at all
  // once `signal` is aborted): the steps run one member after another, each set ready when its turn comes. Member
  // i + 2 is started only once member i is done, so no more than two members' sets are held at once.
  const runs: Promise<Float32Array>[] = [];
  for (const [i, seed] of seeds.entries()) {
    if (i >= 2 && (await runs[i - 2]!.then(() => false, () => true))) break; // a member failed: thrown below
    if (signal?.aborted === true) break; // thrown below, once the members started have settled
    if (seeds.length > 1) hooks.log?.(`member ${i + 1} of ${seeds.length}: seed ${seed}`);
    const after = i > 0 ? runs[i - 1]!.then(() => signal?.throwIfAborted()) : undefined;
    after?.catch(() => undefined); // read by the member's steps, or never if it fails before them
    const run = trainRouterParams(memberConfig(config, seed), after !== undefined ? { ...hooks, stepsAfter: after } : hooks);
    run.catch(() => undefined); // awaited below, in order
    runs.push(run);
  }
  const settled = await Promise.allSettled(runs);
  for (const r of settled) if (r.status === 'rejected') throw r.reason;
  signal?.throwIfAborted();
  return settled.map((r) => (r as PromiseFulfilledResult<Float32Array>).value);
}

export interface EnsembleOptions {
  /**
   * Train the members at once (each its own steps, which a GPU interleaves) instead of one after another. Their sets
   * come from the simulation cache: a caller that sets this starts them with `prefetchSimulation` (every member's
   * training set first). The same members either way. @defaultValue false
   */
  concurrent?: boolean;
}

/** One member's run: its parameters, the first member's whole result, and the seconds it took. */
interface MemberRun {
  params: Float32Array;
  result?: TrainResult;
  seconds: number;
}

/** Trains one member per seed (`seeds[0]` first) and scores the ensemble. */
export async function trainEnsemble(config: TrainConfig, seeds: readonly number[], hooks: TrainHooks = {}, opts: EnsembleOptions = {}): Promise<EnsembleResult> {
  if (seeds.length < 2 || new Set(seeds).size !== seeds.length) {
    throw new RangeError(`Expected at least two distinct seeds for an ensemble but received ${JSON.stringify(seeds)}`);
  }
  // The first member trains and is scored on its held-out histories (the ensemble's); the others give their
  // parameters alone, the same bytes (`trainRouterParams`). Each run keeps its seconds.
  const member = async (i: number, memberHooks: TrainHooks): Promise<MemberRun> => {
    const t0 = performance.now();
    const c = memberConfig(config, seeds[i]!);
    const result = i === 0 ? await trainRouter(c, { ...memberHooks, keepSets: true }) : undefined;
    const params = result?.params ?? (await trainRouterParams(c, memberHooks));
    return { params, ...(result ? { result } : {}), seconds: (performance.now() - t0) / 1000 };
  };
  const runs: Promise<MemberRun>[] = [];
  if (opts.concurrent === true) {
    for (const i of seeds.keys()) {
      const tag = `[member ${i + 1}] `;
      hooks.log?.(`member ${i + 1} of ${seeds.length}: seed ${seeds[i]}`);
      const log = hooks.log;
      const warn = hooks.warn ?? log;
      const run = member(i, { ...hooks, ...(log ? { log: (m: string) => log(tag + m) } : {}), ...(warn ? { warn: (m: string) => warn(tag + m) } : {}) });
      run.catch(() => undefined); // awaited below
      runs.push(run);
    }
  } else {
    for (const i of seeds.keys()) {
      hooks.log?.(`member ${i + 1} of ${seeds.length}: seed ${seeds[i]}`);
      const next = seeds[i + 1];
      // Where a member's steps leave the host's cores free (on the GPU, from a set held there), the next member's
      // training histories are simulated meanwhile: the same set, made earlier.
      const onStepsStart = ({ hostCoresFree }: { hostCoresFree: boolean }) => {
        if (hostCoresFree && next !== undefined) prefetchSimulation(memberConfig(config, next), 0);
      };
      runs.push(Promise.resolve(await member(i, { ...hooks, onStepsStart })));
    }
  }
  // The ensemble's forwards on the first member's held-out sets, each member's as soon as it and the first member are
  // done (members trained at once end one after another), on one backend in member order: only the last member's
  // are left for the end.
  const backend = createTrainerBackend(config.hidden, config.threads, hooks.warn ?? (() => undefined));
  const forwards = (async () => {
    const { validation, test } = (await runs[0]!).result!.sets!;
    const val: Float32Array[] = [];
    const tst: Float32Array[] = [];
    const memberTest: EnsembleResult['memberTest'] = [];
    for (const run of runs) {
      backend.setParams((await run).params, 1);
      val.push((await routeTokenSet(backend, validation)).probs);
      const out = await routeTokenSet(backend, test);
      tst.push(out.probs);
      memberTest.push(accuracyAlone(test, out.probs, out.assign));
    }
    return { validation, test, valProbs: val, testProbs: tst, memberTest };
  })();
  forwards.catch(() => undefined); // awaited below, once every member has settled
  let scored: Awaited<typeof forwards>;
  const members: MemberRun[] = [];
  let s0: number;
  try {
    const settled = await Promise.allSettled(runs);
    for (const r of settled) if (r.status === 'rejected') throw r.reason;
    for (const r of settled) members.push((r as PromiseFulfilledResult<MemberRun>).value);
    s0 = performance.now();
    scored = await forwards;
  } finally {
    await forwards.catch(() => undefined);
    backend.close();
  }
  const { validation, test, valProbs, testProbs, memberTest } = scored;
  const first = members[0]!.result!;
  delete first.sets;
  // The fit and the means on the pool's threads: the JS thread meanwhile serves the routers and the cross-fit.
  const threads = config.simThreads ?? config.threads;
  const temperature = await fitTemperatureOnPool((await averageMembersOnPool(valProbs, 1, threads)).probs, validation.labels, threads);
  const [val, out] = await Promise.all([averageMembersOnPool(valProbs, temperature, threads), averageMembersOnPool(testProbs, temperature, threads)]);
  const testPreds = perTicker(test, out.probs, out.assign);
  const summaries = { validation: summarisePredictions(perTicker(validation, val.probs, val.assign)), test: summarisePredictions(testPreds), ...heldOutBreakdown(test, testPreds) };
  hooks.log?.(`held-out scoring of the ensemble: ${((performance.now() - s0) / 1000).toFixed(1)} s after the last member`);
  return {
    first,
    params: members.map((m) => m.params),
    memberTest,
    memberSeconds: members.map((m) => m.seconds),
    temperature,
    ...summaries,
  };
}

/** One router's outputs on a token set, alone: the share of days routed to the label, and of tickers by majority. */
function accuracyAlone(set: TokenSet, probs: Float32Array, assign: Uint8Array): { perDay: number; perTicker: number } {
  let days = 0;
  for (let i = 0; i < assign.length; i++) if (assign[i] === set.labels[i]) days++;
  let tickers = 0;
  for (const t of set.tickers) if (majorityDomain(assign.subarray(t.start, t.end), probs.subarray(t.start * D, t.end * D)) === t.label) tickers++;
  return { perDay: days / Math.max(1, assign.length), perTicker: tickers / Math.max(1, set.tickers.length) };
}
