import { loadConfig } from '../config.js';
import { DashboardError, startDashboard } from '../dashboard/server.js';
import { createLogger } from '../log.js';
import { closeRedis, connectClient, redactUrl } from '../../jobs/connection.js';
import { parseArgs, UsageError } from './args.js';
import { CommandError, EXIT, runCommand, runIfMain } from './run.js';

export const DASHBOARD_USAGE = `Usage: npm run dashboard [-- --help]

Serves the pipeline's dashboard until SIGINT/SIGTERM:
  /          runs (status, progress, tickers, failures, duration, backend) with their four PNGs and summaries;
             reloads itself while a run is active
  /runs/ID   one run in full, with its summary.md
  /queues    bull-board for moe-fetch, moe-route and moe-report (read-only unless DASHBOARD_QUEUE_ACTIONS=true)
  /metrics   Prometheus text: jobs by state per queue, job durations, router tokens/s and backend, runs by status

Environment: DASHBOARD_HOST (default 127.0.0.1), DASHBOARD_PORT (3000), DASHBOARD_TOKEN (required when the host
is not loopback; every request then needs it: "Authorization: Bearer TOKEN", or open any page once with
?token=TOKEN), DASHBOARD_QUEUE_ACTIONS, REDIS_URL (or REDIS_CLUSTER_NODES), MOE_PREFIX, REPORTS_DIR, LOG_LEVEL.`;

export function main(argv: readonly string[]): Promise<number> {
  return runCommand('dashboard', () => dashboard(argv));
}

async function dashboard(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv, { help: { type: 'boolean' } });
  if (args.flags.has('help')) {
    console.log(DASHBOARD_USAGE);
    return EXIT.ok;
  }
  if (args.positionals.length > 0) throw new UsageError(`Expected no positional arguments but received ${JSON.stringify(args.positionals[0])}`);
  const config = loadConfig();
  const logger = createLogger({ name: 'moe-dashboard', level: config.logLevel });
  const redis = await connectClient(config, 'moe-dashboard');
  // Later errors (Redis restarts) are logged; ioredis reconnects and the next request works again.
  redis.on('error', (err: Error) => logger.warn({ err: err.message, redis: redactUrl(config.redisUrl) }, 'redis connection error'));

  let running;
  try {
    running = await startDashboard({
      host: config.dashboard.host,
      port: config.dashboard.port,
      token: config.dashboard.token,
      queueActions: config.dashboard.queueActions,
      prefix: config.prefix,
      reportsDir: config.reportsDir,
      redis,
      logger,
    });
  } catch (err) {
    await closeRedis(redis);
    if (err instanceof DashboardError) throw new CommandError(err.message, err.code === 'LISTEN_FAILED' ? EXIT.failed : EXIT.usage, { cause: err });
    throw err;
  }
  logger.info(
    { url: running.url, prefix: config.prefix, reportsDir: config.reportsDir, token: config.dashboard.token !== undefined, queueActions: config.dashboard.queueActions },
    'dashboard listening',
  );

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  logger.info({ signal }, 'dashboard stopping');
  await running.close();
  await closeRedis(redis);
  return EXIT.ok;
}

await runIfMain(import.meta.url, main);
