import { loadConfig } from '../config.js';
import { createLogger } from '../log.js';
import { WORKER_ROLES, type WorkerRole } from '../../jobs/queues.js';
import { startWorkers } from '../../workers/start.js';
import { intFlag, listFlag, parseArgs, UsageError } from './args.js';
import { EXIT, runCommand, runIfMain } from './run.js';

export const WORKERS_USAGE = `Usage: npm run workers -- [--only fetch,route,report,schedule] [--concurrency N] [--threads N]

Starts BullMQ workers for the pipeline stages and runs until SIGINT/SIGTERM, then finishes active jobs and exits.
Run as many processes on as many hosts as you like; they share the queues through REDIS_URL. One route worker per GPU.

Options:
  --only LIST        stages to serve (default fetch,route,report,schedule; schedule turns cron ticks into runs)
  --concurrency N    fetch jobs at once (default 16; route and report take one job at a time)
  --threads N        feature-pool threads (default: ⌊CPUs / MOE_HOST_PROCS⌋, at least 1, at most 4)
  --help             this text

On SIGTERM/SIGINT the workers take no new jobs and finish active ones for up to SHUTDOWN_TIMEOUT_MS (default
30000); jobs still running then go back to their queue for another worker, and the process exits 0.

Environment: REDIS_URL (or REDIS_CLUSTER_NODES, host:port,… of a Redis Cluster), MOE_PREFIX, MOE_MODEL,
MOE_BACKEND (auto|cpu), REPORTS_DIR, LOG_LEVEL, FEATURE_TTL_SECONDS, SHUTDOWN_TIMEOUT_MS, JOB_LOCK_MS,
YAHOO_TIMEOUT_MS, YAHOO_MAX_PER_SECOND, BAR_CACHE_TTL_SECONDS, MOE_HOST_PROCS (fetch processes on this host, which
share its CPUs between their feature pools; default 1).
Logs are JSON lines (pino) on stdout.`;

const FLAGS = {
  only: { type: 'string' },
  concurrency: { type: 'string' },
  threads: { type: 'string' },
  help: { type: 'boolean' },
} as const;

export function main(argv: readonly string[]): Promise<number> {
  return runCommand('workers', () => workers(argv));
}

async function workers(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv, FLAGS);
  if (args.flags.has('help')) {
    console.log(WORKERS_USAGE);
    return EXIT.ok;
  }
  if (args.positionals.length > 0) throw new UsageError(`Expected no positional arguments but received ${JSON.stringify(args.positionals[0])}`);
  const roles: WorkerRole[] = listFlag(args, 'only', WORKER_ROLES, WORKER_ROLES);
  const concurrency = intFlag(args, 'concurrency', 16, 1, 64);
  const threads = args.flags.has('threads') ? intFlag(args, 'threads', 1, 1, 64) : undefined;
  const config = loadConfig();

  const logger = createLogger({ name: 'moe-workers', level: config.logLevel });
  // Handlers go in before anything starts, so a signal during start-up (model loading, Redis connect) still leads to
  // an orderly close. Later signals must not kill a process that is finishing its jobs (Ctrl-C reaches the whole
  // process group, and a supervisor may follow with SIGTERM): they are logged; SIGKILL remains the way to force.
  let stopping = false;
  let resolveStop: (signal: NodeJS.Signals) => void = () => undefined;
  const stopped = new Promise<NodeJS.Signals>((resolve) => (resolveStop = resolve));
  const onStop = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'already shutting down (send SIGKILL to force)');
      return;
    }
    stopping = true;
    resolveStop(signal);
  };
  process.on('SIGINT', onStop);
  process.on('SIGTERM', onStop);

  let running;
  try {
    const opts: Parameters<typeof startWorkers>[0] = { config, roles, concurrency: { fetch: concurrency }, logger };
    if (threads !== undefined) opts.featureThreads = threads;
    running = await startWorkers(opts);
  } catch (err) {
    logger.fatal({ err }, 'workers could not start');
    process.off('SIGINT', onStop);
    process.off('SIGTERM', onStop);
    return EXIT.failed;
  }

  const signal = await stopped;
  logger.info({ signal }, 'shutting down: finishing active jobs');
  try {
    await running.close();
  } catch (err) {
    logger.error({ err }, 'shutdown failed');
    return EXIT.failed;
  } finally {
    process.off('SIGINT', onStop);
    process.off('SIGTERM', onStop);
  }
  logger.info('stopped');
  return EXIT.ok;
}

await runIfMain(import.meta.url, main);
