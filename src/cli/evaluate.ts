/**
 * `npm run evaluate -- --data DIR [--labels FILE] [--model PATH] [--tickers A,B] [--days N] [--max-bars N | --last-bars N | --window-bars N [--window-step S]] [--by-year] [--context-dir DIR] [--context-series none|NAME,…] [--stand-in-context on|off] [--router learned|rules] [--json]`
 * Routes every labelled `<TICKER>.csv` of DIR with the model and prints accuracy per ticker and per day.
 * `--max-bars N` routes each ticker from its first N bars only (a new listing), `--last-bars N` from its last N,
 * `--window-bars N` from every stretch of N bars (one token each, a stretch every S bars, 20 by default: the
 * accuracy and calibration from N bars of history over many tokens per ticker);
 * `--context-series none|NAME,…` routes with only those context series (equity, rates, gold, commodity, dollar;
 * `none`: without any), as from a source that lacks the others;
 * `--by-year` adds the metrics per calendar year of the routed days. Tickers below `UNCERTAIN_CONFIDENCE` are listed
 * apart, with the per-ticker accuracy of the confident rest (`confident` in `--json`).
 * Exit code 0 on success, 2 on bad usage, 1 when evaluation fails.
 */
import { existsSync, statSync } from 'node:fs';
import { EvaluationError, evaluateDirectory, evaluationJson, formatEvaluation, type EvaluateOptions } from '../training/evaluate.js';
import { ModelError } from '../router/model.js';
import { MAX_RANGE_DAYS } from '../limits.js';
import { minHistoryBars } from '../config.js';
import { WARMUP_DAYS } from '../data/features/compute.js';
import { CONTEXT_SET, type ContextName } from '../data/features/context.js';
import { UsageError, intFlag, parseArgs, stringFlag } from './args.js';
import { CommandError, EXIT, runCommand, runIfMain } from './run.js';

const USAGE =
  'usage: npm run evaluate -- --data DIR [--labels FILE] [--model PATH] [--tickers A,B,...] [--days N] [--max-bars N | --last-bars N | --window-bars N [--window-step S]] [--by-year] [--context-dir DIR] [--context-series none|NAME,...] [--stand-in-context on|off] [--router learned|rules] [--json]';

/** Most bars a slice may name: the longest history one fetch holds. */
const MAX_SLICE_BARS = MAX_RANGE_DAYS + WARMUP_DAYS;

function parseOptions(argv: readonly string[]): { opts: EvaluateOptions; json: boolean } | 'help' {
  const args = parseArgs(argv, {
    data: { type: 'string' },
    labels: { type: 'string' },
    model: { type: 'string' },
    tickers: { type: 'string' },
    days: { type: 'string' },
    'max-bars': { type: 'string' },
    'last-bars': { type: 'string' },
    'window-bars': { type: 'string' },
    'window-step': { type: 'string' },
    'by-year': { type: 'boolean' },
    'context-dir': { type: 'string' },
    'context-series': { type: 'string' },
    'stand-in-context': { type: 'string' },
    router: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean' },
  });
  if (args.flags.has('help')) return 'help';
  if (args.positionals.length > 0) throw new UsageError(`Expected no positional arguments but received ${JSON.stringify(args.positionals)}`);
  const dataDir = stringFlag(args, 'data');
  if (dataDir === undefined) throw new UsageError('Expected a folder of <TICKER>.csv for --data but received nothing');
  if (!existsSync(dataDir) || !statSync(dataDir).isDirectory()) {
    throw new UsageError(`Expected a folder of <TICKER>.csv for --data but received ${JSON.stringify(dataDir)} (not a folder)`);
  }
  const opts: EvaluateOptions = { dataDir, warn: (m) => console.error(`warning: ${m}`) };
  const labels = stringFlag(args, 'labels');
  if (labels !== undefined) {
    if (!existsSync(labels)) throw new UsageError(`Expected a labels CSV for --labels but received ${JSON.stringify(labels)} (no such file)`);
    opts.labelsFile = labels;
  }
  const model = stringFlag(args, 'model');
  if (model !== undefined) {
    if (!existsSync(model)) throw new UsageError(`Expected a model file for --model but received ${JSON.stringify(model)} (no such file)`);
    opts.modelPath = model;
  }
  const tickers = stringFlag(args, 'tickers');
  if (tickers !== undefined) {
    opts.tickers = tickers.split(',').map((t) => t.trim()).filter((t) => t !== '');
    if (opts.tickers.length === 0) throw new UsageError(`Expected comma-separated tickers for --tickers but received ${JSON.stringify(tickers)}`);
  }
  const contextDir = stringFlag(args, 'context-dir');
  if (contextDir !== undefined) {
    if (!existsSync(contextDir) || !statSync(contextDir).isDirectory()) {
      throw new UsageError(`Expected a folder of <TICKER>.csv for --context-dir but received ${JSON.stringify(contextDir)} (not a folder)`);
    }
    opts.contextDir = contextDir;
  }
  const series = stringFlag(args, 'context-series');
  if (series !== undefined) opts.keepContext = parseContextSeries(series);
  const standIn = stringFlag(args, 'stand-in-context');
  if (standIn !== undefined) {
    if (standIn !== 'on' && standIn !== 'off') throw new UsageError(`Expected on or off for --stand-in-context but received ${JSON.stringify(standIn)}`);
    opts.standInContext = standIn === 'on';
  }
  const router = stringFlag(args, 'router');
  if (router !== undefined) {
    if (router !== 'learned' && router !== 'rules') {
      throw new UsageError(`Expected learned or rules for --router but received ${JSON.stringify(router)}`);
    }
    opts.router = router;
  }
  if (args.flags.has('days')) opts.days = intFlag(args, 'days', 0, 1, MAX_RANGE_DAYS);
  const slices = ['max-bars', 'last-bars', 'window-bars'].filter((f) => args.flags.has(f));
  if (slices.length > 1) throw new UsageError(`Expected one of --max-bars, --last-bars and --window-bars but received ${slices.map((f) => `--${f}`).join(' and ')}`);
  if (args.flags.has('window-bars') && args.flags.has('days')) throw new UsageError('Expected --window-bars without --days but received both');
  if (args.flags.has('window-step') && !args.flags.has('window-bars')) throw new UsageError('Expected --window-bars N with --window-step but received none');
  // A slice shorter than the minimum history (MIN_HISTORY_BARS) would route nothing.
  const minBars = minHistoryBars();
  if (args.flags.has('max-bars')) opts.maxBars = intFlag(args, 'max-bars', 0, minBars, MAX_SLICE_BARS);
  if (args.flags.has('last-bars')) opts.lastBars = intFlag(args, 'last-bars', 0, minBars, MAX_SLICE_BARS);
  if (args.flags.has('window-bars')) opts.windowBars = intFlag(args, 'window-bars', 0, minBars, MAX_SLICE_BARS);
  if (args.flags.has('window-step')) opts.windowStep = intFlag(args, 'window-step', 0, 1, MAX_SLICE_BARS);
  if (args.flags.has('by-year')) opts.byYear = true;
  return { opts, json: args.flags.has('json') };
}

/** `none` or a comma-separated list of context names (CONTEXT_SET), for `--context-series`. */
function parseContextSeries(text: string): ContextName[] {
  const names: readonly string[] = CONTEXT_SET.map((c) => c.name);
  const expected = `none or comma-separated names among ${names.join(', ')} for --context-series`;
  if (text.trim() === 'none') return [];
  const list = text.split(',').map((t) => t.trim());
  for (const n of list) if (!names.includes(n)) throw new UsageError(`Expected ${expected} but received ${JSON.stringify(text)} (unknown ${JSON.stringify(n)})`);
  if (new Set(list).size !== list.length) throw new UsageError(`Expected ${expected} but received ${JSON.stringify(text)} (a name twice)`);
  return list as ContextName[];
}

export function main(argv: readonly string[]): Promise<number> {
  return runCommand('evaluate', async () => {
    const parsed = parseOptions(argv);
    if (parsed === 'help') {
      console.log(USAGE);
      return EXIT.ok;
    }
    try {
      const report = await evaluateDirectory(parsed.opts);
      console.log(formatEvaluation(report));
      if (parsed.json) console.log(JSON.stringify(evaluationJson(report)));
      return EXIT.ok;
    } catch (e) {
      if (e instanceof EvaluationError || e instanceof ModelError) {
        throw new CommandError(e.message, e instanceof EvaluationError && e.code === 'BAD_LABELS' ? EXIT.usage : EXIT.failed, { cause: e });
      }
      throw e;
    }
  });
}

await runIfMain(import.meta.url, main);
