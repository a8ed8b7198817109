import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { FlowProducer, Queue } from 'bullmq';
import { loadConfig } from '../config.js';
import type { FetchRange, SourceName } from '../data/types.js';
import { REPORT_FILES, type RunSummary } from '../report/types.js';
import { closeRedis, connectClient } from '../../jobs/connection.js';
import { QUEUE_NAMES } from '../../jobs/queues.js';
import type { RunMeta } from '../../jobs/run-meta.js';
import { isConnectionError, watchRun } from '../../jobs/watch-run.js';
import { canonicalTickers, enqueueRun, type RunRequest } from '../../jobs/enqueue-run.js';
import { MAX_DAYS, SOURCE_NAMES } from '../limits.js';
import { isIsoDate, PayloadError } from '../../jobs/payloads.js';
import { errorText } from '../util/errors.js';
import { intFlag, parseArgs, stringFlag, UsageError } from './args.js';
import { readTickersFile } from './tickers-file.js';
import { CommandError, EXIT, runCommand, runIfMain } from './run.js';

export const ENQUEUE_USAGE = `Usage: npm run enqueue -- TICKER... [options]
       npm run enqueue -- --tickers-file FILE|- [TICKER...] [options]

Enqueues one run (fetch → route → report) and follows it until the report is written. If Redis restarts meanwhile,
it says so, reconnects and goes on watching.

Options:
  --tickers-file F        tickers from file F, or - for standard input: separated by spaces, commas or lines, # starts
                          a comment (for universes too large for a command line)
  --source yahoo|csv|sim  where bars come from (default yahoo)
  --data-dir DIR          folder of <TICKER>.csv files (required for csv)
  --days N                routed days per ticker, 1..${MAX_DAYS} (default 120)
  --end YYYY-MM-DD        last day (default: latest available)
  --seed N                simulator seed (sim only, default 7)
  --no-wait               print the run id and return without waiting
  --timeout SEC           stop waiting after SEC seconds (default: wait until the run ends)
  --help                  this text

Exit status: 0 the run finished, 1 it failed, 2 bad usage or configuration.`;

const FLAGS = {
  'tickers-file': { type: 'string' },
  source: { type: 'string' },
  'data-dir': { type: 'string' },
  days: { type: 'string' },
  end: { type: 'string' },
  seed: { type: 'string' },
  'no-wait': { type: 'boolean' },
  timeout: { type: 'string' },
  help: { type: 'boolean' },
} as const;

export interface EnqueueArgs {
  request: RunRequest;
  wait: boolean;
  timeoutMs: number;
  help: boolean;
}

/** Parses and validates the command line; throws UsageError with the reason. */
export function parseEnqueueArgs(argv: readonly string[]): EnqueueArgs {
  const args = parseArgs(argv, FLAGS);
  const help = args.flags.has('help');
  if (help) return { request: { tickers: [], source: 'yahoo', range: { days: 1 } }, wait: false, timeoutMs: 0, help };

  const source = (stringFlag(args, 'source') ?? 'yahoo') as SourceName;
  if (!SOURCE_NAMES.includes(source)) {
    throw new UsageError(`Expected one of ${SOURCE_NAMES.join(', ')} for --source but received ${JSON.stringify(source)}`);
  }
  const dataDirRaw = stringFlag(args, 'data-dir');
  if (source === 'csv' && dataDirRaw === undefined) throw new UsageError('Expected --data-dir DIR for --source csv but received nothing');
  if (source !== 'csv' && dataDirRaw !== undefined) throw new UsageError(`Expected no --data-dir for --source ${source} but received ${JSON.stringify(dataDirRaw)}`);
  let dataDir: string | undefined;
  if (dataDirRaw !== undefined) {
    dataDir = path.resolve(dataDirRaw);
    let isDir = false;
    try {
      isDir = statSync(dataDir).isDirectory();
    } catch {
      isDir = false;
    }
    if (!isDir) throw new UsageError(`Expected an existing folder for --data-dir but received ${JSON.stringify(dataDirRaw)}`);
  }

  const range: FetchRange = { days: intFlag(args, 'days', 120, 1, MAX_DAYS) };
  const end = stringFlag(args, 'end');
  if (end !== undefined) {
    if (!isIsoDate(end)) {
      throw new UsageError(`Expected date YYYY-MM-DD for --end but received ${JSON.stringify(end)}`);
    }
    range.end = end;
  }
  if (args.flags.has('seed') && source !== 'sim') throw new UsageError(`Expected no --seed for --source ${source} (only sim uses it)`);
  const seed = source === 'sim' ? intFlag(args, 'seed', 7, 0, 0xffffffff) : undefined;

  const file = stringFlag(args, 'tickers-file');
  if (args.positionals.length === 0 && file === undefined) throw new UsageError('Expected at least one TICKER but received none');
  let tickers: string[];
  try {
    // The command line's tickers first, each checked where it was typed; the file names its own bad line.
    const typed = args.positionals.length > 0 ? canonicalTickers(args.positionals) : [];
    tickers = file === undefined ? typed : canonicalTickers([...typed, ...readTickersFile(file, 'tickers-file').tickers]);
  } catch (err) {
    if (err instanceof PayloadError) throw new UsageError(err.message);
    throw err;
  }
  const request: RunRequest = { tickers, source, range };
  if (dataDir !== undefined) request.dataDir = dataDir;
  if (seed !== undefined) request.seed = seed;
  return {
    request,
    wait: !args.flags.has('no-wait'),
    timeoutMs: intFlag(args, 'timeout', 0, 0, 86_400) * 1000,
    help,
  };
}

function progressLine(m: RunMeta): string {
  const total = m.tickerCount;
  const fetched = `fetched ${m.fetched}/${total}${m.fetchFailed > 0 ? ` (${m.fetchFailed} failed)` : ''}`;
  switch (m.status) {
    case 'queued':
      return fetched;
    case 'routing':
      // A run of several shards routes each as soon as its tickers are fetched, while the others still fetch.
      return m.shards > 1 ? `${fetched}; routing, ${m.shardsRouted}/${m.shards} shards routed` : `${fetched}; routing`;
    case 'reporting':
      return `${fetched}; routed; reporting`;
    case 'finished':
      return `reported: ${m.routed ?? 0} routed, ${total - (m.routed ?? 0)} failed`;
    case 'failed':
      return `failed: ${m.error ?? 'unknown reason'}`;
  }
}

/** Prints the report location and each PNG, for finished and failed runs alike (a failed run may have a report). */
export function reportLines(reportDir: string | undefined): string[] {
  if (reportDir === undefined) return [];
  const pngs = [REPORT_FILES.routing, REPORT_FILES.conditions, REPORT_FILES.timeSeries, REPORT_FILES.performance];
  return [`report: ${reportDir}`, ...pngs.map((f) => `  ${path.join(reportDir, f)}`), `  ${path.join(reportDir, REPORT_FILES.summaryMd)}`];
}

/** Failed tickers with their reasons, read from the run's summary.json. */
async function failureLines(reportDir: string | undefined): Promise<string[]> {
  if (reportDir === undefined) return [];
  try {
    const summary = JSON.parse(await readFile(path.join(reportDir, REPORT_FILES.summaryJson), 'utf8')) as RunSummary;
    return summary.failed.map((f) => `failed ${f.ticker}: ${f.reason}`);
  } catch (err) {
    return [`(could not read ${REPORT_FILES.summaryJson}: ${errorText(err)})`];
  }
}

export function main(argv: readonly string[], out: (line: string) => void = console.log): Promise<number> {
  return runCommand('enqueue', () => enqueue(argv, out));
}

async function enqueue(argv: readonly string[], out: (line: string) => void): Promise<number> {
  const parsed = parseEnqueueArgs(argv);
  if (parsed.help) {
    out(ENQUEUE_USAGE);
    return EXIT.ok;
  }
  const config = loadConfig();
  // Reconnecting: a run outlives a Redis restart (AOF keeps the queues, the workers ride it out), so its watch does too.
  const redis = await connectClient(config, 'moe-enqueue', undefined, { reconnect: true });
  const connection = { connection: redis, prefix: config.prefix };
  const flow = new FlowProducer(connection);
  const reportQueue = new Queue(QUEUE_NAMES.report, connection);
  // The flow producer and the queue re-emit their connection's errors (and print them as stacks when nobody listens).
  // A lost connection is the watch's to report, in one line; anything else gets one line, however often re-emitted.
  const reported = new Set<string>();
  const onRedisError = (err: Error) => {
    if (isConnectionError(err) || reported.has(err.message)) return;
    reported.add(err.message);
    console.error(`enqueue: Redis: ${err.message}`);
  };
  redis.on('error', onRedisError);
  flow.on('error', onRedisError);
  reportQueue.on('error', onRedisError);
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once('SIGINT', onSignal);
  let runId: string | undefined;
  try {
    const run = await enqueueRun({ flow, redis, prefix: config.prefix, runTtlSeconds: config.runTtlSeconds, shardSize: config.shardSize }, parsed.request);
    runId = run.runId;
    out(`run ${run.runId}: ${run.tickers.length} tickers from ${parsed.request.source}${run.shards > 1 ? ` in ${run.shards} shards` : ''}`);
    if (!parsed.wait) return EXIT.ok;
    let progressed = false;
    const hint = setTimeout(() => {
      if (!progressed) out('still queued after 10 s: is a worker running? (npm run workers)');
    }, 10_000);
    hint.unref();
    const final = await watchRun({
      redis,
      prefix: config.prefix,
      runId: run.runId,
      reportQueue,
      timeoutMs: parsed.timeoutMs,
      signal: abort.signal,
      onProgress: (m) => {
        if (m.status !== 'queued' || m.fetched + m.fetchFailed > 0) progressed = true;
        out(progressLine(m));
      },
      onConnection: (c) =>
        console.error(c.state === 'lost' ? `enqueue: lost Redis (${c.reason}); reconnecting…` : `enqueue: Redis is back; still watching run ${run.runId}`),
    }).finally(() => clearTimeout(hint));
    for (const line of await failureLines(final.reportDir)) out(line);
    for (const line of reportLines(final.reportDir)) out(line);
    return final.status === 'finished' ? EXIT.ok : EXIT.failed;
  } catch (err) {
    if (abort.signal.aborted && runId !== undefined) {
      throw new CommandError(`stopped watching; run ${runId} goes on in the workers`, EXIT.interrupted, { cause: err });
    }
    throw new CommandError(errorText(err), EXIT.failed, { cause: err });
  } finally {
    process.off('SIGINT', onSignal);
    await Promise.allSettled([flow.close(), reportQueue.close()]);
    await closeRedis(redis);
  }
}

await runIfMain(import.meta.url, main);
