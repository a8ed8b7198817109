import { Worker, type Job } from 'bullmq';
import type { Piscina } from 'piscina';
import type { Logger } from 'pino';
import type { Config } from '../src/config.js';
import { loadModel } from '../src/router/model.js';
import { createRenderPool } from '../src/report/index.js';
import { closeRedis, createRedis, redactUrl, waitReady } from '../src/queue/connection.js';
import { QUEUE_NAMES, type Role } from '../src/queue/names.js';
import { createFetchProcessor } from './fetch.js';
import { createFeaturePool } from './pool.js';
import { createReportProcessor } from './report.js';
import { createRouteProcessor, openRouter, type LoadedRouter } from './route.js';

export interface StartWorkersOptions {
  config: Config;
  /** Stages this process serves. @defaultValue all three */
  roles?: readonly Role[];
  /**
   * Jobs at once per stage. Route is 1 by default: its worker owns one router and one forward pass already uses
   * the native threads. @defaultValue fetch 4, route 1, report 1
   */
  concurrency?: Partial<Record<Role, number>>;
  /** Threads of the feature pool. @defaultValue `defaultThreads()` */
  featureThreads?: number;
  /** Threads of the render pool. @defaultValue 1 */
  renderThreads?: number;
  logger: Logger;
}

export interface RunningWorkers {
  readonly workers: ReadonlyMap<Role, Worker>;
  /** Router backend in use, when this process routes. */
  readonly backend: string | undefined;
  /** Stops taking jobs, waits for active ones, then frees pools, the router and Redis. Safe to call twice. */
  close(): Promise<void>;
}

const DEFAULT_CONCURRENCY: Record<Role, number> = { fetch: 4, route: 1, report: 1 };

/**
 * Starts BullMQ workers for the chosen stages. Everything a stage needs for its whole life (model, router, pools)
 * is created before its worker takes the first job, so a broken model fails at start, not per job.
 */
export async function startWorkers(opts: StartWorkersOptions): Promise<RunningWorkers> {
  const { config, logger } = opts;
  const roles = opts.roles ?? ['fetch', 'route', 'report'];
  const redis = createRedis(config.redisUrl, { role: 'worker', name: `moe-workers:${roles.join(',')}` });
  // Workers ride out Redis restarts (ioredis reconnects); say so in the logs instead of as unhandled error events.
  redis.on('error', (err: Error) => logger.warn({ err: err.message, redis: redactUrl(config.redisUrl) }, 'redis connection error'));
  const pools: Piscina[] = [];
  let loaded: LoadedRouter | undefined;
  const workers = new Map<Role, Worker>();

  const cleanup = async () => {
    await Promise.all([...workers.values()].map((w) => w.close()));
    await Promise.all(pools.map((p) => p.destroy()));
    loaded?.router.close();
    loaded = undefined;
    await closeRedis(redis);
  };

  try {
    await waitReady(redis);
    const common = { redis, prefix: config.prefix, runTtlSeconds: config.runTtlSeconds, logger };
    const processors: Partial<Record<Role, (job: Job<unknown>) => Promise<unknown>>> = {};
    if (roles.includes('fetch')) {
      // Features must match what the route workers' model expects; the model file says which size that is.
      const { hidden } = await loadModel(config.modelPath);
      const pool = createFeaturePool(opts.featureThreads);
      pools.push(pool);
      processors.fetch = createFetchProcessor({ ...common, featureTtlSeconds: config.featureTtlSeconds, hidden, pool });
    }
    if (roles.includes('route')) {
      loaded = await openRouter(config.modelPath, config.backend);
      processors.route = createRouteProcessor({ ...common, featureTtlSeconds: config.featureTtlSeconds, loaded });
    }
    if (roles.includes('report')) {
      const pool = createRenderPool({ maxThreads: opts.renderThreads ?? 1 });
      pools.push(pool);
      processors.report = createReportProcessor({ ...common, reportsDir: config.reportsDir, modelPath: config.modelPath, pool });
    }
    for (const role of roles) {
      const processor = processors[role]!;
      const concurrency = opts.concurrency?.[role] ?? DEFAULT_CONCURRENCY[role];
      const w = new Worker(QUEUE_NAMES[role], processor, { connection: redis, prefix: config.prefix, concurrency });
      w.on('error', (err) => logger.error({ role, err }, 'worker error'));
      workers.set(role, w);
    }
    await Promise.all([...workers.values()].map((w) => w.waitUntilReady()));
  } catch (err) {
    await cleanup();
    throw err;
  }
  logger.info(
    { roles, prefix: config.prefix, backend: loaded?.router.backend, fallbackReason: loaded?.router.fallbackReason },
    'workers started',
  );

  let closing: Promise<void> | undefined;
  return {
    workers,
    backend: loaded?.router.backend,
    close: () => (closing ??= cleanup()),
  };
}
