import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FlowProducer, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { loadConfig, type Config } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { initParams, saveModel } from '../../src/router/model.js';
import { REPORT_FILES, type RunSummary } from '../../src/report/types.js';
import { closeRedis, createRedis } from '../../jobs/connection.js';
import { QUEUE_NAMES } from '../../jobs/queues.js';
import type { RunMeta } from '../../jobs/run-meta.js';
import { watchRun } from '../../jobs/watch-run.js';
import { clearPrefix } from './redis.js';
import { enqueueRun, type EnqueuedRun, type RunRequest } from '../../jobs/enqueue-run.js';
import { startWorkers, type RunningWorkers } from '../../workers/start.js';

/**
 * A whole pipeline for a test: its own key prefix and temp folder, a seeded random-init model (tests of the
 * pipeline, not of the shipped model's accuracy), the three workers in this process, and a cleanup that removes
 * every queue, key and file it made.
 */
export interface TestPipeline {
  config: Config;
  redis: Redis;
  tmp: string;
  /** Enqueues a run in shards of `shardSize` tickers (default: the configuration's) and waits for its end. */
  run(req: RunRequest, shardSize?: number): Promise<{ run: EnqueuedRun; meta: RunMeta }>;
  summary(meta: RunMeta): Promise<RunSummary>;
  close(): Promise<void>;
}

export async function startTestPipeline(name: string, env: Record<string, string> = {}): Promise<TestPipeline> {
  const tmp = await mkdtemp(path.join(os.tmpdir(), `moe-${name}-`));
  const modelPath = path.join(tmp, 'router.safetensors');
  await saveModel(modelPath, { hidden: 16, params: initParams(16, 11), temperature: 1 });
  const config = loadConfig({
    MOE_PREFIX: `t-${name}-${randomUUID().slice(0, 8)}`,
    MOE_MODEL: modelPath,
    REPORTS_DIR: path.join(tmp, 'reports'),
    FEATURE_TTL_SECONDS: '600',
    RUN_TTL_SECONDS: '600',
    ...env,
  });
  const redis = createRedis(config.redisUrl);
  const flow = new FlowProducer({ connection: redis, prefix: config.prefix });
  const reportQueue = new Queue(QUEUE_NAMES.report, { connection: redis, prefix: config.prefix });
  let workers: RunningWorkers | undefined;
  try {
    workers = await startWorkers({ config, logger: createLogger({ name, level: 'silent' }), featureThreads: 1, concurrency: { fetch: 2 } });
  } catch (err) {
    await Promise.allSettled([flow.close(), reportQueue.close()]);
    await closeRedis(redis);
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }

  return {
    config,
    redis,
    tmp,
    async run(req, shardSize = config.shardSize) {
      const run = await enqueueRun({ flow, redis, prefix: config.prefix, runTtlSeconds: config.runTtlSeconds, shardSize }, req);
      const meta = await watchRun({ redis, prefix: config.prefix, runId: run.runId, reportQueue, intervalMs: 100, timeoutMs: 50_000 });
      return { run, meta };
    },
    async summary(meta) {
      return JSON.parse(await readFile(path.join(meta.reportDir!, REPORT_FILES.summaryJson), 'utf8')) as RunSummary;
    },
    async close() {
      await workers?.close();
      await clearPrefix(redis, config.prefix);
      await Promise.allSettled([flow.close(), reportQueue.close()]);
      await closeRedis(redis);
      await rm(tmp, { recursive: true, force: true });
    },
  };
}
