import os from 'node:os';
import { FlowProducer, WaitingError, type Job, type Worker } from 'bullmq';
import type { Piscina } from 'piscina';
import type { Logger } from 'pino';
import type { Config } from '../src/config.js';
import { loadModel } from '../src/router/model.js';
import { createRenderPool } from '../src/report/index.js';
import { closeRedis, createRedis, redactUrl, waitReady, type RedisClient } from '../jobs/connection.js';
import { QUEUE_NAMES, SCHEDULE_QUEUE, type WorkerRole } from '../jobs/queues.js';
import { createScheduleProcessor } from '../jobs/schedule.js';
import { RedisRateLimiter } from './rate-limit.js';
import { createFetchProcessor } from './fetch.js';
import { createFeaturePool, defaultFeatureThreads, trackRunning } from './pool.js';
import { createReportProcessor } from './report.js';
import { ShardPrefetch } from './shard-prefetch.js';
import { createRouteProcessor, openRouter, type LoadedRouter } from './route.js';
import { boundedError } from './job.js';
import { StageWorker } from './stage-worker.js';
import { rateLimitKey } from '../jobs/keys.js';

export interface StartWorkersOptions {
  config: Config;
  /** Stages this process serves (`schedule`: cron ticks that enqueue runs). @defaultValue fetch, route, report */
  roles?: readonly WorkerRole[];
  /**
   * Jobs at once per stage. Route is 1 by default: its worker owns one router and one forward pass already uses
   * the native threads. A fetch job mostly waits (Redis round trips, the pool, the network), so many run at once:
   * 4 at a time left the fetch stage latency-bound with the pool threads idle 60 % of the time (bench:pipeline
   * --cpu-prof, 5,000 tickers). @defaultValue fetch 16, route 1, report 1, schedule 1
   */
  concurrency?: Partial<Record<WorkerRole, number>>;
  /**
   * Threads of the feature pool. @defaultValue this process's share of the host's CPUs,
   * `defaultFeatureThreads(config.hostProcs)` (`MOE_HOST_PROCS` fetch processes on the host)
   */
  featureThreads?: number;
  /**
   * Threads of the render pool; the four figures of a report render in parallel, so up to 4 help.
   * @defaultValue the CPU count, at most 4
   */
  renderThreads?: number;
  logger: Logger;
}

export interface RunningWorkers {
  readonly workers: ReadonlyMap<WorkerRole, Worker>;
  /** Router backend in use, when this process routes. */
  readonly backend: string | undefined;
  /** The report stage's shard prefetch (what it holds: `rows`, `size`), when this process reports. */
  readonly shardPrefetch: ShardPrefetch | undefined;
  /**
   * Stops taking jobs and waits up to `timeoutMs` for active ones; jobs still running then are handed back to their
   * queue (waiting again, for any other worker). Then frees pools, the router and Redis. Safe to call twice.
   * @param timeoutMs - @defaultValue `config.shutdownTimeoutMs`
   */
  close(timeoutMs?: number): Promise<void>;
}

/** A stage processor; `signal` aborts when the job was handed back at shutdown (its result no longer counts). */
type Processor = (job: Job<unknown>, token?: string, signal?: AbortSignal) => Promise<unknown>;

/**
 * A processor whose job goes back to the wait list when the worker cancels it (shutdown time-out), instead of
 * waiting out its lock as a stalled job. The inner work cannot be interrupted; it is simply no longer awaited, and
 * its writes are idempotent (fixed keys), so the next worker redoing the job is harmless.
 */
function handBackOnCancel(proc: Processor, logger: Logger): (job: Job<unknown>, token?: string, signal?: AbortSignal) => Promise<unknown> {
  // Three declared parameters: BullMQ passes the cancel signal only to processors that take one.
  return (job, token, signal) =>
    new Promise((resolve, reject) => {
      const onAbort = () => {
        job.moveToWait(token).then(
          () => {
            logger.warn({ jobId: job.id, queue: job.queueName }, 'handed back to the queue at shutdown');
            reject(new WaitingError());
          },
          (err: unknown) => reject(err instanceof Error ? err : new Error(String(err))),
        );
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      // Every failure is bounded here, the last step before BullMQ stores its reason and stack in Redis.
      proc(job, token, signal)
        .then(resolve, (err: unknown) => reject(boundedError(err)))
        .finally(() => signal?.removeEventListener('abort', onAbort));
    });
}

/** Longest wait at shutdown for pool tasks that outlived their job (a 1,000-ticker render takes about 1–4 s). */
const POOL_DRAIN_MS = 15_000;

const DEFAULT_CONCURRENCY: Record<WorkerRole, number> = { fetch: 16, route: 1, report: 1, schedule: 1 };
const QUEUE_OF: Record<WorkerRole, string> = { ...QUEUE_NAMES, schedule: SCHEDULE_QUEUE };

/**
 * Starts BullMQ workers for the chosen stages. Everything a stage needs for its whole life (model, router, pools)
 * is created before its worker takes the first job, so a broken model fails at start, not per job.
 */
export async function startWorkers(opts: StartWorkersOptions): Promise<RunningWorkers> {
  const { config, logger } = opts;
  const roles = opts.roles ?? (['fetch', 'route', 'report'] as const);
  // Workers ride out Redis restarts (ioredis reconnects); say so in the logs instead of as unhandled error events.
  const connect = (name: string, what: string): RedisClient => {
    const client = createRedis(config, { role: 'worker', name });
    client.on('error', (err: Error) => logger.warn({ err: err.message, redis: redactUrl(config.redisUrl) }, `redis connection error${what}`));
    return client;
  };
  const redis = connect(`moe-workers:${roles.join(',')}`, '');
  const pools: { pool: Piscina; idle: (timeoutMs: number) => Promise<void> }[] = [];
  let loaded: LoadedRouter | undefined;
  const workers = new Map<WorkerRole, Worker>();
  let featureThreads: number | undefined;
  let flow: FlowProducer | undefined;
  let prefetch: ShardPrefetch | undefined;
  let eventsRedis: RedisClient | undefined;

  /** True once jobs were handed back: their processors may still be running (a forward pass in native code). */
  let handedBack = false;
  const closeWorkers = async (timeoutMs: number) => {
    const all = [...workers.values()];
    const graceful = Promise.all(all.map((w) => w.close()));
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)));
    const first = await Promise.race([graceful.then(() => 'done' as const), expired]);
    clearTimeout(timer);
    if (first === 'timeout') {
      logger.warn({ timeoutMs }, 'shutdown time-out: handing active jobs back to their queues');
      handedBack = true;
      for (const w of all) w.cancelAllJobs('worker shutting down');
      await graceful;
    }
  };

  const cleanup = async (timeoutMs = config.shutdownTimeoutMs) => {
    await closeWorkers(timeoutMs);
    await flow?.close();
    await prefetch?.close();
    if (eventsRedis !== undefined) await closeRedis(eventsRedis);
    // Tasks still running (a warm-up render, a handed-back report) finish first: a thread terminated inside native
    // rendering code can take the whole process down. Bounded, so a stuck task cannot hold the exit forever.
    await Promise.all(pools.map(async ({ pool, idle }) => {
      await idle(POOL_DRAIN_MS);
      await pool.destroy();
    }));
    // A handed-back route job may still be inside the router; freeing it under a running forward pass is unsafe, and
    // the process is about to exit, which frees it anyway.
    if (!handedBack) loaded?.router.close();
    loaded = undefined;
    await closeRedis(redis);
  };

  try {
    await waitReady(redis);
    const common = { redis, prefix: config.prefix, runTtlSeconds: config.runTtlSeconds, logger };
    const processors: Partial<Record<WorkerRole, Processor>> = {};
    if (roles.includes('fetch')) {
      // Features must match what the route workers' model expects; the model file says which size that is.
      const { hidden } = await loadModel(config.modelPath);
      featureThreads = opts.featureThreads ?? defaultFeatureThreads(config.hostProcs);
      const pool = createFeaturePool(featureThreads);
      pools.push({ pool, ...trackRunning(pool) });
      // One request rate for every fetch worker on this Redis, whatever the number of processes and hosts.
      const limiter = new RedisRateLimiter({ redis, key: rateLimitKey(config.prefix, 'yahoo'), max: config.yahoo.maxPerSecond, windowMs: 1000 });
      processors.fetch = createFetchProcessor({
        ...common,
        featureTtlSeconds: config.featureTtlSeconds,
        hidden,
        pool,
        yahoo: { timeoutMs: config.yahoo.timeoutMs, limiter },
        barCache: { redis, prefix: config.prefix, ttlSeconds: config.barCacheTtlSeconds },
      });
    }
    if (roles.includes('route')) {
      loaded = await openRouter(config.modelPath, config.backend);
      processors.route = createRouteProcessor({ ...common, featureTtlSeconds: config.featureTtlSeconds, loaded });
    }
    if (roles.includes('report')) {
      // One thread rendered the four figures one after another: 75 % of a 500-ticker run's time on 2 CPUs
      // (bench:pipeline, report stage 3.5 s of 4.5 s); the figures are independent.
      const pool = createRenderPool({ maxThreads: opts.renderThreads ?? Math.max(1, Math.min(4, os.availableParallelism())) });
      pools.push({ pool, ...trackRunning(pool) });
      // Each run's shard outputs are read and merged here while it is routed, so its report job only finalises; the
      // route queue's events need a connection of their own (a blocking read).
      eventsRedis = connect('moe-workers:report-prefetch', ' (shard prefetch)');
      prefetch = new ShardPrefetch({ events: eventsRedis, redis, prefix: config.prefix, logger });
      await prefetch.start();
      processors.report = createReportProcessor({ ...common, reportsDir: config.reportsDir, modelPath: config.modelPath, pool, prefetch });
    }
    if (roles.includes('schedule')) {
      flow = new FlowProducer({ connection: redis, prefix: config.prefix });
      processors.schedule = createScheduleProcessor({ ...common, flow, shardSize: config.shardSize });
    }
    for (const role of roles) {
      const processor = processors[role]!;
      const concurrency = opts.concurrency?.[role] ?? DEFAULT_CONCURRENCY[role];
      const w = new StageWorker(QUEUE_OF[role], handBackOnCancel(processor, logger), {
        connection: redis,
        prefix: config.prefix,
        concurrency,
        // Shown as the job's processedBy, so a dashboard (and the crash tests) can tell which process ran a job.
        name: `${os.hostname()}:${process.pid}:${role}`,
        // BullMQ's stalled check needs two passes after a dead worker's last renewal (one marks the job, a later one
        // moves it once the lock has lapsed); checking every half lock takes jobs over 1.1–1.5× JOB_LOCK_MS after a
        // kill (30 kills with 2 s locks, median 1.13×) where a check every lock period took 1–3.5× (median 1.8×).
        // A job may stall twice (two crashed workers) before it fails.
        lockDuration: config.jobLockMs,
        stalledInterval: Math.max(1000, Math.round(config.jobLockMs / 2)),
        maxStalledCount: 2,
      });
      w.on('error', (err) => logger.error({ role, err }, 'worker error'));
      // A stalled job was taken over from a worker that stopped renewing its lock (crashed, or a blocked event loop).
      w.on('stalled', (jobId) => logger.warn({ role, jobId }, 'job stalled'));
      workers.set(role, w);
    }
    await Promise.all([...workers.values()].map((w) => w.waitUntilReady()));
  } catch (err) {
    await cleanup();
    throw err;
  }
  logger.info(
    { roles, prefix: config.prefix, featureThreads, backend: loaded?.router.backend, fallbackReason: loaded?.router.fallbackReason },
    'workers started',
  );

  let closing: Promise<void> | undefined;
  return {
    workers,
    backend: loaded?.router.backend,
    shardPrefetch: prefetch,
    close: (timeoutMs?: number) => (closing ??= cleanup(timeoutMs)),
  };
}
