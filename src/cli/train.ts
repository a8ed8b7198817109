/**
 * `npm run train [-- --hidden 16 --seed 7 --steps 1500 --out models/router.safetensors]`
 * Trains the router on simulator data, fits its temperature, prints held-out metrics and writes the model file.
 */
import path from 'node:path';
import { DOMAINS } from '../domains.js';
import { FEATURE_SPEC, WARMUP_DAYS } from '../data/features.js';
import { isSupportedHidden } from '../router/layout.js';
import { DEFAULT_MODEL_PATH, saveModel } from '../router/model.js';
import { defaultTrainConfig, metricsSummary, trainRouter, type TrainConfig } from '../router/train.js';
import { formatConfusion, formatLevel } from '../router/evaluate.js';
import { UsageError, intFlag, parseArgs, parseOrExplain, stringFlag } from './args.js';

const USAGE = `usage: npm run train -- [--hidden 16|32] [--seed N] [--steps N] [--batch N] [--lr X]
                       [--tickers-per-subtype N] [--days N] [--train-seeds N] [--focal G] [--threads N] [--out FILE]`;

function numberFlag(raw: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(v) || v < min || v > max) {
    throw new UsageError(`Expected number in [${min}, ${max}] for --${name} but received ${JSON.stringify(raw)}`);
  }
  return v;
}

function parseConfig(argv: string[]): { config: TrainConfig; out: string } | 'help' {
  const args = parseArgs(argv, {
    hidden: { type: 'string' },
    seed: { type: 'string' },
    steps: { type: 'string' },
    batch: { type: 'string' },
    lr: { type: 'string' },
    'tickers-per-subtype': { type: 'string' },
    days: { type: 'string' },
    'train-seeds': { type: 'string' },
    focal: { type: 'string' },
    threads: { type: 'string' },
    out: { type: 'string' },
    help: { type: 'boolean' },
  });
  if (args.flags.has('help')) return 'help';
  if (args.positionals.length > 0) throw new UsageError(`Expected no positional arguments but received ${JSON.stringify(args.positionals)}`);
  const hidden = intFlag(args, 'hidden', 16, 16, 32);
  if (!isSupportedHidden(hidden)) throw new UsageError(`Expected 16 or 32 for --hidden but received ${hidden}`);
  const config = defaultTrainConfig({
    hidden,
    seed: intFlag(args, 'seed', 7, 0, 2 ** 31 - 1),
    steps: intFlag(args, 'steps', defaultTrainConfig().steps, 1, 1_000_000),
  });
  config.batchSize = intFlag(args, 'batch', config.batchSize, 16, 1 << 20);
  config.lr = numberFlag(stringFlag(args, 'lr'), 'lr', config.lr, 1e-6, 1);
  config.focalGamma = numberFlag(stringFlag(args, 'focal'), 'focal', config.focalGamma, 0, 10);
  config.threads = intFlag(args, 'threads', config.threads, 1, 256);
  config.data.tickersPerSubtype = intFlag(args, 'tickers-per-subtype', config.data.tickersPerSubtype, 1, 1000);
  config.data.days = intFlag(args, 'days', config.data.days, WARMUP_DAYS + 20, 20_000);
  config.data.trainSeeds = intFlag(args, 'train-seeds', config.data.trainSeeds, 1, 1000);
  config.warmupSteps = Math.min(config.warmupSteps, Math.max(1, Math.floor(config.steps / 10)));
  const out = path.resolve(stringFlag(args, 'out') ?? DEFAULT_MODEL_PATH);
  return { config, out };
}

async function main(): Promise<void> {
  const parsed = parseOrExplain(() => parseConfig(process.argv.slice(2)), USAGE);
  if (parsed === undefined) return;
  const { config, out } = parsed;
  console.log(`training H=${config.hidden} seed=${config.seed} steps=${config.steps} batch=${config.batchSize} → ${out}`);
  const result = await trainRouter(config, {
    log: (m) => console.log(m),
    warn: (m) => console.warn(`warning: ${m}`),
    onStep: (s) =>
      console.log(
        `step ${String(s.step).padStart(5)} lr ${s.lr.toExponential(2)} loss ${s.loss.toFixed(4)} ce ${s.ce.toFixed(4)} rec ${s.rec.toFixed(4)} |g| ${s.gradNorm.toFixed(3)}`,
      ),
  });
  const t = result.test;
  console.log(`backend ${result.backend}; loss ${result.lossStart.toFixed(4)} → ${result.lossEnd.toFixed(4)}; temperature ${result.temperature.toFixed(3)}`);
  console.log(`held-out simulator (seed ${result.data.test.seeds.join(',')}, ${t.tickers} instruments, ${t.days} days):`);
  console.log(formatLevel('per day', t.perDay).join('\n'));
  console.log(formatLevel('per ticker (majority)', t.perTicker).join('\n'));
  console.log(formatConfusion(t.perDay.confusion).join('\n'));
  console.log(
    `per day by sub-type: ${Object.entries(result.testBySubtype).map(([k, v]) => `${k} ${(100 * v).toFixed(1)}%`).join(', ')}`,
  );
  console.log(`mean confidence ${t.meanConfidence.toFixed(3)}, ECE ${t.ece.toFixed(3)}, NLL ${t.nll.toFixed(3)}`);
  console.log(`time: data ${result.seconds.data.toFixed(1)} s, training ${result.seconds.train.toFixed(1)} s, total ${result.seconds.total.toFixed(1)} s`);

  // Timings and the backend name stay out of the file so that the same command rebuilds the same bytes.
  await saveModel(out, {
    hidden: config.hidden,
    params: result.params,
    temperature: result.temperature,
    metadata: {
      training_config: { ...config, featureSpec: FEATURE_SPEC, domains: DOMAINS },
      metrics: {
        heldOutSimulator: { ...metricsSummary(result.test), perDayBySubtype: roundAll(result.testBySubtype) },
        validationSimulator: metricsSummary(result.validation),
        trainLoss: { start: round(result.lossStart), end: round(result.lossEnd) },
        temperature: round(result.temperature),
      },
      data: {
        source: 'simulator (src/data/simulator.ts trainingSet), features src/data/features.ts computeFeatures',
        train: result.data.train,
        validation: { ...result.data.validation, use: 'temperature fit' },
        test: { ...result.data.test, use: 'held-out metrics' },
      },
      seed: String(config.seed),
      command: rebuildCommand(config, out),
    },
  });
  console.log(`wrote ${out}`);
}

function round(v: number): number {
  return Math.round(v * 10_000) / 10_000;
}

function roundAll(r: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, round(v)]));
}

function rebuildCommand(c: TrainConfig, out: string): string {
  const rel = path.relative(process.cwd(), out) || out;
  return `npm run train -- --hidden ${c.hidden} --seed ${c.seed} --steps ${c.steps} --batch ${c.batchSize} --lr ${c.lr} --tickers-per-subtype ${c.data.tickersPerSubtype} --days ${c.data.days} --train-seeds ${c.data.trainSeeds} --focal ${c.focalGamma} --out ${rel}`;
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? `${e.name}: ${e.message}` : String(e));
  process.exitCode = 1;
});
