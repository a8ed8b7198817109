/**
 * `npm run evaluate -- --data DIR [--labels FILE] [--model PATH] [--tickers A,B] [--days N] [--context-dir DIR] [--router learned|rules] [--json]`
 * Routes every labelled `<TICKER>.csv` of DIR with the model and prints accuracy per ticker and per day.
 * Exit code 0 on success, 2 on bad usage, 1 when evaluation fails.
 */
import { existsSync, statSync } from 'node:fs';
import { EvaluationError, evaluateDirectory, evaluationJson, formatEvaluation, type EvaluateOptions } from '../training/evaluate.js';
import { ModelError } from '../router/model.js';
import { MAX_RANGE_DAYS } from '../limits.js';
import { UsageError, intFlag, parseArgs, stringFlag } from './args.js';
import { CommandError, EXIT, runCommand, runIfMain } from './run.js';

const USAGE = 'usage: npm run evaluate -- --data DIR [--labels FILE] [--model PATH] [--tickers A,B,...] [--days N] [--context-dir DIR] [--router learned|rules] [--json]';

function parseOptions(argv: readonly string[]): { opts: EvaluateOptions; json: boolean } | 'help' {
  const args = parseArgs(argv, {
    data: { type: 'string' },
    labels: { type: 'string' },
    model: { type: 'string' },
    tickers: { type: 'string' },
    days: { type: 'string' },
    'context-dir': { type: 'string' },
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
  const router = stringFlag(args, 'router');
  if (router !== undefined) {
    if (router !== 'learned' && router !== 'rules') {
      throw new UsageError(`Expected learned or rules for --router but received ${JSON.stringify(router)}`);
    }
    opts.router = router;
  }
  if (args.flags.has('days')) opts.days = intFlag(args, 'days', 0, 1, MAX_RANGE_DAYS);
  return { opts, json: args.flags.has('json') };
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
