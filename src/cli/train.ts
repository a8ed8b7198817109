/**
 * `npm run train [-- --hidden 16 --seed 7 --steps 1500 --out models/router.safetensors]`
 * Trains the router on simulator data, fits its temperature, prints held-out metrics and writes the model file.
 */
import os from 'node:os';
import path from 'node:path';
import { DOMAINS } from '../domains.js';
import { FEATURE_SPEC, WARMUP_DAYS } from '../data/features/compute.js';
import { DEFAULT_MODEL_PATH, saveModel } from '../router/model.js';
import { cudaStatus } from '../router/native.js';
import { defaultTrainConfig, metricsSummary, prefetchSimulation, trainRouter, type TrainConfig, type TrainResult, type TrainStepLog } from '../training/train.js';
import { memberConfig, trainEnsemble } from '../training/ensemble.js';
import { formatConfusion, formatLevel, type EvaluationMetrics } from '../training/evaluate.js';
import { calibrateOnLabelled } from '../training/calibrate.js';
import { crossFit, crossFitSummary, formatCrossFit } from '../training/crossfit.js';
import { closeTrainingWorkPools, workPoolBusy } from '../training/work-pool.js';
import { REAL_DATA_FLAGS, UsageError, dirFlag, onOffFlag, fileFlag, hiddenFlag, intFlag, numberFlag, parseArgs, realDataFlags, realTrainingData, seedsFlag, stringFlag, trainingSetFlags, TRAINING_SET_FLAGS, writableFilePath, type RealArgs } from './args.js';
import { EXIT, runCommand, runIfMain } from './run.js';

const USAGE = `usage: npm run train -- [--hidden 16|32] [--seed N | --seeds N,N,...] [--steps N] [--batch N] [--lr X]
                       [--tickers-per-subtype N] [--days N] [--train-seeds N] [--test-seeds N] [--focal G] [--context-dropout P] [--new-listing-share P] [--vol-scale-share P] [--vol-scale-range LO,HI] [--vol-scale-where all|whole-context] [--context-inception-share P] [--stand-in-share P] [--threads N] [--sim-threads N] [--feeder on|off] [--feeder-threads N] [--fused-step on|off] [--steps-per-call N] [--device-set on|off] [--router-threads on|off] [--fold-concurrency N] [--out FILE]
                       [--calibrate-data DIR [--calibrate-labels FILE] [--calibrate-context-dir DIR] [--calibrate-folds K]]
                       [--real-data DIR [--real-labels FILE] [--real-context-dir DIR] [--real-repeat R] [--real-listings L] [--real-folds K] [--real-context-dropout P]]

--seeds 7,11,13 trains one router per seed with the same recipe and writes them as one ensemble (their mean
probabilities, one temperature); its held-out figures are on the first seed's histories.
--real-data DIR adds a real labelled folder to the training set (each ticker's series --real-repeat times, default 4,
and --real-listings new-listing copies of its first 60–400 bars, default 8) and cross-fits over --real-folds ticker
folds (default 5): one router (or ensemble) per fold trained without that fold's tickers and scored on them, every
bar and a listing's first and last 60 / 120 / 250; the temperature and history temperature are fitted on those
out-of-fold predictions (not with --calibrate-data). It trains folds + 1 times as long. --real-context-dropout P (default
0) gives that share of the real copies a degraded context, as the simulator's instruments get. --context-inception-share P
(default 0) draws that share of every degraded context (simulated and real) as a source of earlier years has it: the
reference funds in their listing order (SPY, IEF, GLD, DBC, UUP), the first k present, the later ones starting later.
--stand-in-share P (default 0) replaces that share of the simulated degraded contexts with stand-ins made of other
instruments of the same market history, as npm run evaluate stands in for missing reference funds.
--threads N is the native trainer's (part of the recipe: the model file records it). --sim-threads N (default: the
CPUs, up to 16) is the one pool of worker threads that simulates the market histories, computes the real folder's
features and runs the calibration's fits, each router's training data first, --feeder off
gathers the minibatches between steps instead of on feeder threads (--feeder-threads N, default half the CPUs, from 1
to 8, each gathering every N-th batch), --fused-step off trains on the GPU with
separate loss and optimizer calls instead of one call per --steps-per-call N steps (default 16), --device-set off
sends those calls their batches from the host instead of only the batches' token indices into a copy of the training
set on the GPU, --router-threads off makes those calls from the main thread instead of from one worker thread per
router (each waiting on its own calls while the main thread makes the other routers' data and scores), and
--fold-concurrency N trains N of the cross-fit's folds at once (default 5 where a GPU trains, whose small training
kernels one router leaves mostly idle, 1 on a CPU; each fold in flight holds its own training set, ~1.7 GB for the
shipped recipe), and above 1 also the file's members at once, the folds beside them, every member's training
histories simulated first: these change the speed, never the file (the fused steps compute --focal's weights in the kernel:
with --focal above 0 the GPU's floats may differ).`;

interface CalibrateArgs {
  dataDir: string;
  labelsFile?: string;
  contextDir?: string;
  folds: number;
}

function parseConfig(
  argv: readonly string[],
): { config: TrainConfig; out: string; foldConcurrency: number; seeds?: number[]; calibrate?: CalibrateArgs; real?: RealArgs } | 'help' {
  const args = parseArgs(argv, {
    hidden: { type: 'string' },
    seed: { type: 'string' },
    seeds: { type: 'string' },
    steps: { type: 'string' },
    batch: { type: 'string' },
    lr: { type: 'string' },
    'tickers-per-subtype': { type: 'string' },
    days: { type: 'string' },
    'train-seeds': { type: 'string' },
    'test-seeds': { type: 'string' },
    focal: { type: 'string' },
    'context-dropout': { type: 'string' },
    'new-listing-share': { type: 'string' },
    ...TRAINING_SET_FLAGS,
    'calibrate-data': { type: 'string' },
    'calibrate-labels': { type: 'string' },
    'calibrate-context-dir': { type: 'string' },
    'calibrate-folds': { type: 'string' },
    ...REAL_DATA_FLAGS,
    threads: { type: 'string' },
    'sim-threads': { type: 'string' },
    feeder: { type: 'string' },
    'fused-step': { type: 'string' },
    'feeder-threads': { type: 'string' },
    'fold-concurrency': { type: 'string' },
    'steps-per-call': { type: 'string' },
    'device-set': { type: 'string' },
    'router-threads': { type: 'string' },
    out: { type: 'string' },
    help: { type: 'boolean' },
  });
  if (args.flags.has('help')) return 'help';
  if (args.positionals.length > 0) throw new UsageError(`Expected no positional arguments but received ${JSON.stringify(args.positionals)}`);
  const hidden = hiddenFlag(args);
  const seeds = seedsFlag(args);
  const config = defaultTrainConfig({
    hidden,
    seed: seeds?.[0] ?? intFlag(args, 'seed', 7, 0, 2 ** 31 - 1),
    steps: intFlag(args, 'steps', defaultTrainConfig().steps, 1, 1_000_000),
  });
  config.batchSize = intFlag(args, 'batch', config.batchSize, 16, 1 << 20);
  config.lr = numberFlag(stringFlag(args, 'lr'), 'lr', config.lr, 1e-6, 1);
  config.focalGamma = numberFlag(stringFlag(args, 'focal'), 'focal', config.focalGamma, 0, 10);
  config.data.contextDropout = numberFlag(stringFlag(args, 'context-dropout'), 'context-dropout', config.data.contextDropout, 0, 1);
  config.data.newListingShare = numberFlag(stringFlag(args, 'new-listing-share'), 'new-listing-share', config.data.newListingShare, 0, 1);
  trainingSetFlags(args, config.data);
  config.threads = intFlag(args, 'threads', config.threads, 1, 256);
  // Speed only: the token set, the batches and the calibration's fits are the same for any value of these two.
  // The host's CPUs by default (at most 16): the shipped command keeps `--threads 2` for its bytes, but simulating
  // and calibrating on every core changes nothing in the file.
  config.simThreads = intFlag(args, 'sim-threads', Math.max(config.threads, Math.min(16, os.availableParallelism())), 1, 256);
  config.feeder = onOffFlag(args, 'feeder');
  config.feederThreads = intFlag(args, 'feeder-threads', Math.max(1, Math.min(8, Math.floor(os.availableParallelism() / 2))), 1, 64);
  config.fusedStep = onOffFlag(args, 'fused-step');
  config.stepsPerCall = intFlag(args, 'steps-per-call', 16, 1, 4096);
  config.deviceSet = onOffFlag(args, 'device-set');
  config.routerThreads = onOffFlag(args, 'router-threads');
  // Up to five folds at once where the trainer runs on a GPU (its kernels are small; the host's cores feed them), one
  // at a time on a CPU. Each fold in flight holds its own training set in host memory (~1.7 GB for the shipped recipe).
  const foldConcurrency = intFlag(args, 'fold-concurrency', cudaStatus().available ? 5 : 1, 1, 64);
  config.data.tickersPerSubtype = intFlag(args, 'tickers-per-subtype', config.data.tickersPerSubtype, 1, 1000);
  config.data.days = intFlag(args, 'days', config.data.days, WARMUP_DAYS + 20, 20_000);
  config.data.trainSeeds = intFlag(args, 'train-seeds', config.data.trainSeeds, 1, 1000);
  config.data.testSeeds = intFlag(args, 'test-seeds', config.data.testSeeds, 1, 1000);
  config.warmupSteps = Math.min(config.warmupSteps, Math.max(1, Math.floor(config.steps / 10)));
  const out = stringFlag(args, 'out') ?? DEFAULT_MODEL_PATH;
  const real = realDataFlags(args);
  if (real !== undefined) config.data.real = realTrainingData(real);
  const calData = stringFlag(args, 'calibrate-data');
  if (calData === undefined) {
    for (const f of ['calibrate-labels', 'calibrate-context-dir', 'calibrate-folds']) {
      if (args.flags.has(f)) throw new UsageError(`Expected --calibrate-data DIR with --${f} but received none`);
    }
    return { config, out, foldConcurrency, ...(seeds ? { seeds } : {}), ...(real ? { real } : {}) };
  }
  const calibrate: CalibrateArgs = { dataDir: dirFlag('calibrate-data', calData), folds: intFlag(args, 'calibrate-folds', 5, 2, 1000) };
  const labels = stringFlag(args, 'calibrate-labels');
  if (labels !== undefined) calibrate.labelsFile = fileFlag('calibrate-labels', labels);
  const ctxDir = stringFlag(args, 'calibrate-context-dir');
  if (ctxDir !== undefined) calibrate.contextDir = dirFlag('calibrate-context-dir', ctxDir);
  return { config, out, foldConcurrency, ...(seeds ? { seeds } : {}), calibrate };
}

export function main(argv: readonly string[]): Promise<number> {
  // The worker threads of the simulation and feature work stop with the command (work-pool.ts).
  return runCommand('train', () => train(argv).finally(closeTrainingWorkPools));
}

async function train(argv: readonly string[]): Promise<number> {
  const parsed = parseConfig(argv);
  if (parsed === 'help') {
    console.log(USAGE);
    return EXIT.ok;
  }
  const { config, calibrate, seeds, real, foldConcurrency } = parsed;
  // Checked once every flag is, and before training: not when the model is done and has nowhere to go.
  const out = writableFilePath(parsed.out, 'out');
  console.log(`training H=${config.hidden} ${seeds ? `seeds=${seeds.join(',')}` : `seed=${config.seed}`} steps=${config.steps} batch=${config.batchSize} → ${out}`);
  // The file's figures on the real folder come from routers that did not see its tickers (crossfit.ts). Where folds
  // train at once (a GPU, whose small training kernels one router leaves mostly idle) every router trains as soon as
  // its training set is made: the file's members at once and the fold routers beside them, from the same simulated
  // histories, made once each, every member's training set first (prefetchSimulation). Their log lines carry
  // [fold k], the file's [file]. Elsewhere the members, then the cross-fit, one after another.
  const overlap = real !== undefined && foldConcurrency > 1;
  const tag = overlap ? '[file] ' : '';
  const hooks = {
    log: (m: string) => console.log(m),
    warn: (m: string) => console.warn(`warning: ${m}`),
    onStep: (s: TrainStepLog) =>
      console.log(
        `${tag}step ${String(s.step).padStart(5)} lr ${s.lr.toExponential(2)} loss ${s.loss.toFixed(4)} ce ${s.ce.toFixed(4)} rec ${s.rec.toFixed(4)} |g| ${s.gradNorm.toFixed(3)}`,
      ),
  };
  // Only the first member's held-out histories are scored (the ensemble's; trainEnsemble).
  if (overlap) prefetchSimulation(seeds ? seeds.map((seed) => memberConfig(config, seed)) : config, 1);
  const stop = new AbortController();
  const startCrossFit = () =>
    crossFit({ config, ...(seeds ? { seeds } : {}), folds: real!.folds, concurrency: foldConcurrency, hooks: { ...hooks, onStep: () => undefined }, signal: stop.signal });
  const crossFitting = overlap ? startCrossFit() : undefined;
  crossFitting?.catch(() => undefined); // awaited below; a failure is reported there
  const fileHooks = { ...hooks, log: (m: string) => hooks.log(tag + m), warn: (m: string) => hooks.warn(tag + m) };
  // One router, or the members of an ensemble and their held-out figures together.
  let result: TrainResult;
  let memberParams: Float32Array[];
  let memberSeconds = 0;
  const e0 = performance.now();
  try {
    if (seeds === undefined) {
      result = await trainRouter(config, fileHooks);
      memberParams = [result.params];
    } else {
      const ens = await trainEnsemble(config, seeds, fileHooks, { concurrent: overlap });
      for (const [i, m] of ens.memberTest.entries()) {
        console.log(`member ${i + 1} (seed ${seeds[i]}) alone on the first member's held-out simulator histories: per day ${(100 * m.perDay).toFixed(1)}%, per ticker ${(100 * m.perTicker).toFixed(1)}%${i === 0 ? `; its temperature ${ens.first.temperature.toFixed(3)}` : ''}`);
      }
      memberSeconds = ens.memberSeconds.reduce((a, v) => a + v, 0);
      const { first, params, memberTest: _memberTest, memberSeconds: _memberSeconds, ...scored } = ens;
      result = { ...first, ...scored };
      memberParams = params;
    }
  } catch (err) {
    // No fold starts after this; those training finish before the error is reported (nothing left running).
    stop.abort(err);
    await crossFitting?.catch(() => undefined);
    throw err;
  }
  const t = result.test;
  console.log(`backend ${result.backend}; loss ${result.lossStart.toFixed(4)} → ${result.lossEnd.toFixed(4)}${seeds ? ' (first member)' : ''}; temperature ${result.temperature.toFixed(3)}`);
  console.log(`held-out simulator${seeds ? `, the ensemble of ${seeds.length}` : ''} (seeds ${result.data.test.seeds.join(',')}, ${t.tickers} instruments, ${t.days} days):`);
  console.log(formatLevel('per day', t.perDay).join('\n'));
  console.log(formatLevel('per ticker (majority)', t.perTicker).join('\n'));
  console.log(formatConfusion(t.perDay.confusion).join('\n'));
  console.log(
    `per day by sub-type: ${Object.entries(result.testBySubtype).map(([k, v]) => `${k} ${(100 * v).toFixed(1)}%`).join(', ')}`,
  );
  console.log(`per day by market history: ${Object.entries(result.testBySeed).map(([k, v]) => `${k} ${(100 * v).toFixed(1)}%`).join(', ')}`);
  console.log(`by regime family (per day / per ticker / ECE): ${Object.entries(result.testByFamily).map(([k, m]) => `${k} ${(100 * m.perDay).toFixed(1)}% / ${(100 * m.perTicker).toFixed(1)}% / ${m.ece.toFixed(3)}`).join(', ')}`);
  console.log(`per day by history length (bars): ${Object.entries(result.testByHistory).map(([k, v]) => `${k} ${(100 * v).toFixed(1)}%`).join(', ')}`);
  console.log(`mean confidence ${t.meanConfidence.toFixed(3)}, ECE ${t.ece.toFixed(3)}, NLL ${t.nll.toFixed(3)}`);
  console.log(
    seeds
      ? overlap
        ? `time: ${((performance.now() - e0) / 1000).toFixed(1)} s for ${seeds.length} members trained at once`
        : `time: ${memberSeconds.toFixed(1)} s for ${seeds.length} members`
      : `time: data ${result.seconds.data.toFixed(1)} s, training ${result.seconds.train.toFixed(1)} s, total ${result.seconds.total.toFixed(1)} s`,
  );

  let temperature = result.temperature;
  let historyTemperature = 0;
  let contextTemperature = 0;
  let realCalibration: Record<string, unknown> | undefined;
  if (calibrate) {
    const c0 = performance.now();
    const cal = await calibrateOnLabelled(
      { hidden: config.hidden, params: memberParams[0]!, members: memberParams, temperature },
      { ...calibrate, threads: config.simThreads ?? config.threads, warn: (m) => console.warn(`warning: ${m}`) },
    );
    const show = (m: EvaluationMetrics) => `ECE ${m.ece.toFixed(3)}, NLL ${m.nll.toFixed(3)}, mean confidence ${m.meanConfidence.toFixed(3)}`;
    console.log(
      `calibration on ${cal.tickers} real tickers / ${cal.days} days of ${calibrate.dataDir} (${cal.folds} folds by ticker, ${((performance.now() - c0) / 1000).toFixed(1)} s):`,
    );
    console.log(`  simulator temperature ${temperature.toFixed(3)}: ${show(cal.before)}`);
    console.log(
      `  cross-fitted (fold temperatures ${cal.foldTemperatures.map((t) => t.toFixed(3)).join(', ')}; history temperatures ${cal.foldHistoryTemperatures.map((k) => k.toFixed(1)).join(', ')}; context temperatures ${cal.foldContextTemperatures.map((k) => k.toFixed(2)).join(', ')}): ${show(cal.crossFitted)}`,
    );
    console.log(`  shipped temperature ${cal.temperature.toFixed(3)}, history temperature ${cal.historyTemperature.toFixed(1)}, context temperature ${cal.contextTemperature.toFixed(2)} (fitted on all ${cal.tickers} tickers)`);
    realCalibration = {
      data: path.basename(path.resolve(calibrate.dataDir)),
      tickers: cal.tickers,
      days: cal.days,
      folds: cal.folds,
      foldTemperatures: cal.foldTemperatures.map(round),
      foldHistoryTemperatures: cal.foldHistoryTemperatures.map(round),
      historyTemperature: round(cal.historyTemperature),
      foldContextTemperatures: cal.foldContextTemperatures.map(round),
      contextTemperature: round(cal.contextTemperature),
      simulatorTemperature: round(temperature),
      temperature: round(cal.temperature),
      before: { ece: round(cal.before.ece), nll: round(cal.before.nll), meanConfidence: round(cal.before.meanConfidence) },
      crossFitted: { ece: round(cal.crossFitted.ece), nll: round(cal.crossFitted.nll), meanConfidence: round(cal.crossFitted.meanConfidence) },
    };
    temperature = cal.temperature;
    historyTemperature = cal.historyTemperature;
    contextTemperature = cal.contextTemperature;
  }
  let crossFitted: Record<string, unknown> | undefined;
  if (real) {
    const cf = await (crossFitting ?? startCrossFit());
    console.log(formatCrossFit(cf).join('\n'));
    crossFitted = crossFitSummary(cf, real, round);
    temperature = cf.temperature;
    historyTemperature = cf.historyTemperature;
    contextTemperature = cf.contextTemperature;
  }

  // Where the host's time went: the work pool's tasks (thread-seconds) and the process's CPU in all.
  const cpu = process.cpuUsage();
  const busy = [...workPoolBusy()].map(([file, b]) => `${file.replace('.task', '')} ${b.tasks} tasks ${b.seconds.toFixed(1)} s`);
  console.log(`host: ${((cpu.user + cpu.system) / 1e6).toFixed(1)} CPU-s (system ${(cpu.system / 1e6).toFixed(1)}) in ${(process.uptime()).toFixed(1)} s${busy.length > 0 ? `; work pool: ${busy.join(', ')}` : ''}`);

  // Timings, the backend name and the speed-only settings stay out of the file so that the same command rebuilds the
  // same bytes.
  const { simThreads: _simThreads, feeder: _feeder, feederThreads: _feederThreads, fusedStep: _fusedStep, stepsPerCall: _stepsPerCall, deviceSet: _deviceSet, routerThreads: _routerThreads, ...savedConfig } = config;
  await saveModel(out, {
    hidden: config.hidden,
    params: memberParams[0]!,
    moreMembers: memberParams.slice(1),
    temperature,
    historyTemperature,
    contextTemperature,
    metadata: {
      training_config: { ...savedConfig, ...(seeds ? { seeds } : {}), featureSpec: FEATURE_SPEC, domains: DOMAINS },
      metrics: {
        heldOutSimulator: {
          ...metricsSummary(result.test),
          perDayBySubtype: roundAll(result.testBySubtype),
          perDayBySeed: roundAll(result.testBySeed),
          byFamily: Object.fromEntries(Object.entries(result.testByFamily).map(([k, { bySubtype: _, ...m }]) => [k, { ...m, perDay: round(m.perDay), perTicker: round(m.perTicker), ece: round(m.ece) }])),
          perDayByHistory: roundAll(result.testByHistory),
        },
        validationSimulator: metricsSummary(result.validation),
        trainLoss: { start: round(result.lossStart), end: round(result.lossEnd) },
        temperature: round(temperature),
        ...(realCalibration ? { realCalibration } : {}),
        ...(crossFitted ? { realCrossFitted: crossFitted } : {}),
      },
      data: {
        source: 'simulator (src/data/sim/simulator.ts trainingSet), features src/data/features/compute.ts computeFeatures',
        train: result.data.train,
        ...(seeds ? { members: seeds.map((seed) => ({ seed, trainSeeds: `${seed}…${seed + config.data.trainSeeds - 1}` })) } : {}),
        validation: { ...result.data.validation, use: 'temperature fit' },
        test: { ...result.data.test, use: 'held-out metrics' },
      },
      seed: seeds ? seeds.join(',') : String(config.seed),
      command: rebuildCommand(config, out, calibrate, seeds, real),
    },
  });
  console.log(`wrote ${out}`);
  return EXIT.ok;
}

function round(v: number): number {
  return Math.round(v * 10_000) / 10_000;
}

function roundAll(r: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, round(v)]));
}

function rebuildCommand(c: TrainConfig, out: string, cal?: CalibrateArgs, seeds?: readonly number[], real?: RealArgs): string {
  const rel = path.relative(process.cwd(), out) || out;
  const relDir = (d: string) => path.relative(process.cwd(), path.resolve(d)) || '.';
  const calFlags = cal
    ? ` --calibrate-data ${relDir(cal.dataDir)}${cal.labelsFile ? ` --calibrate-labels ${relDir(cal.labelsFile)}` : ''}${cal.contextDir ? ` --calibrate-context-dir ${relDir(cal.contextDir)}` : ''} --calibrate-folds ${cal.folds}`
    : '';
  const realFlags = real
    ? ` --real-data ${relDir(real.dataDir)}${real.labelsFile ? ` --real-labels ${relDir(real.labelsFile)}` : ''}${real.contextDir ? ` --real-context-dir ${relDir(real.contextDir)}` : ''} --real-repeat ${real.repeat} --real-listings ${real.listings} --real-folds ${real.folds}${real.contextDropout !== undefined ? ` --real-context-dropout ${real.contextDropout}` : ''}`
    : '';
  return `npm run train -- --hidden ${c.hidden} ${seeds ? `--seeds ${seeds.join(',')}` : `--seed ${c.seed}`} --steps ${c.steps} --batch ${c.batchSize} --lr ${c.lr} --tickers-per-subtype ${c.data.tickersPerSubtype} --days ${c.data.days} --train-seeds ${c.data.trainSeeds} --test-seeds ${c.data.testSeeds} --focal ${c.focalGamma} --context-dropout ${c.data.contextDropout} --new-listing-share ${c.data.newListingShare} --vol-scale-share ${c.data.volScaleShare ?? 0}${c.data.volScaleRange ? ` --vol-scale-range ${c.data.volScaleRange.join(',')}` : ''}${c.data.volScaleWholeContextOnly ? ' --vol-scale-where whole-context' : ''}${c.data.contextInceptionShare ? ` --context-inception-share ${c.data.contextInceptionShare}` : ''}${c.data.standInShare ? ` --stand-in-share ${c.data.standInShare}` : ''} --out ${rel}${calFlags}${realFlags}`;
}

await runIfMain(import.meta.url, main);
