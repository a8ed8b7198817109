import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FlowProducer, Queue, QueueEvents } from 'bullmq';
import type { Cluster } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { benchTickers } from '../src/cli/bench-pipeline.js';
import { loadConfig, type Config } from '../src/config.js';
import { DOMAINS } from '../src/domains.js';
import { DEFAULT_UNIVERSE } from '../src/data/universe.js';
import { createLogger } from '../src/log.js';
import { initParams, saveModel } from '../src/router/model.js';
import { REPORT_FILES, type RunSummary } from '../src/report/types.js';
import { closeRedis, createRedis, type RedisClient } from '../jobs/connection.js';
import { prefixPattern, runKey } from '../jobs/keys.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import { enqueueRun } from '../jobs/enqueue-run.js';
import { watchRun } from '../jobs/watch-run.js';
import { startWorkers } from '../workers/start.js';
import { clearPrefix } from './helpers/redis.js';
import { haveRedisClusterTools, startTestCluster, type TestCluster } from './helpers/redis-cluster.js';
import { processedByTag, startWorkerProcess, stopWorkerProcess, type WorkerProc } from './helpers/worker-process.js';
import { expectDrawnPng } from './helpers/png.js';

/**
 * The pipeline on a real three-master Redis Cluster (REDIS_CLUSTER_NODES): every key of a deployment in one slot
 * through the hash-tagged prefix, a whole run in this process, and a run whose fetch worker process is killed with
 * SIGKILL in the middle of the fetch stage.
 */

const haveTools = haveRedisClusterTools();
if (!haveTools) console.warn('redis-cluster: skipped, redis-server and redis-cli are both needed on PATH to start a test cluster');

let tmp: string;
let modelPath: string;
let cluster: TestCluster | undefined;
const running: WorkerProc[] = [];

beforeAll(async () => {
  if (!haveTools) return;
  tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-cluster-'));
  modelPath = path.join(tmp, 'router.safetensors');
  await saveModel(modelPath, { hidden: 16, params: initParams(16, 11), temperature: 1 });
  const t0 = Date.now();
  cluster = await startTestCluster(tmp);
  console.log(`redis-cluster: three masters up and joined in ${Date.now() - t0} ms (${cluster.nodes})`);
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((p) => stopWorkerProcess(p, 'SIGKILL')));
});

afterAll(async () => {
  await cluster?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** A test's configuration on the cluster: its own prefix and reports folder, a short lock for the crash test. */
function clusterConfig(name: string): Config {
  return loadConfig({
    REDIS_CLUSTER_NODES: cluster!.nodes,
    MOE_PREFIX: `t-${name}-${randomUUID().slice(0, 8)}`,
    MOE_MODEL: modelPath,
    REPORTS_DIR: path.join(tmp, `reports-${name}`),
    FEATURE_TTL_SECONDS: '600',
    RUN_TTL_SECONDS: '600',
    JOB_LOCK_MS: '2000',
  });
}

/** Keys matching `pattern` on each master, by the master's port. */
async function keysByMaster(redis: RedisClient, pattern: string): Promise<Map<number, string[]>> {
  const out = new Map<number, string[]>();
  for (const node of (redis as Cluster).nodes('master')) {
    const keys: string[] = [];
    for await (const batch of node.scanStream({ match: pattern, count: 500 })) keys.push(...(batch as string[]));
    out.set(node.options.port!, keys);
  }
  return out;
}

/** Every ticker of the run exactly once in summary.json, all of them routed. */
function expectEveryTickerOnce(s: RunSummary, tickers: string[]): void {
  expect(s.failed).toEqual([]);
  const seen = s.tickers.map((t) => t.ticker);
  expect(seen).toHaveLength(tickers.length);
  expect([...seen].sort()).toEqual([...tickers].sort());
}

describe.skipIf(!haveTools)('Redis Cluster', () => {
  it('runs a whole pipeline with every key of the prefix in one slot, and cleans the prefix off every master', async () => {
    const config = clusterConfig('cluster-e2e');
    expect(config.redisCluster).toBe(true);
    expect(config.prefix).toMatch(/^\{t-cluster-e2e-[0-9a-f]{8}\}$/);
    const redis = createRedis(config);
    const flow = new FlowProducer({ connection: redis, prefix: config.prefix });
    const reportQueue = new Queue(QUEUE_NAMES.report, { connection: redis, prefix: config.prefix });
    const workers = await startWorkers({ config, logger: createLogger({ name: 'cluster-e2e', level: 'silent' }), featureThreads: 1, concurrency: { fetch: 2 } });
    try {
      const picks = DOMAINS.flatMap((d) => DEFAULT_UNIVERSE.filter((u) => u.class === d).slice(0, 3).map((u) => u.ticker));
      const t0 = Date.now();
      // Two shards of six: two route jobs, each the parent of its own fetch jobs, under one report job.
      const run = await enqueueRun({ flow, redis, prefix: config.prefix, runTtlSeconds: config.runTtlSeconds, shardSize: 6 }, {
        tickers: picks,
        source: 'sim',
        range: { days: 60 },
        seed: 3,
      });
      const meta = await watchRun({ redis, prefix: config.prefix, runId: run.runId, reportQueue, intervalMs: 100, timeoutMs: 50_000 });
      console.log(`redis-cluster: 12 tickers × 60 days in ${Date.now() - t0} ms`);

      expect(meta.status).toBe('finished');
      expect(meta.fetched).toBe(12);
      expect(meta.routed).toBe(12);
      expect(meta.reportDir).toBe(path.join(config.reportsDir, run.runId));
      for (const f of [REPORT_FILES.routing, REPORT_FILES.conditions, REPORT_FILES.timeSeries, REPORT_FILES.performance]) {
        await expectDrawnPng(path.join(meta.reportDir!, f));
      }
      expect(existsSync(path.join(meta.reportDir!, REPORT_FILES.summaryMd))).toBe(true);
      const s = JSON.parse(await readFile(path.join(meta.reportDir!, REPORT_FILES.summaryJson), 'utf8')) as RunSummary;
      expect(s.runId).toBe(run.runId);
      expect(s.failed).toEqual([]);
      expect(s.tickers.map((t) => t.ticker)).toEqual(picks);
      expect(s.tokens).toBe(12 * 60);
      for (const t of s.tickers) {
        expect(t.days).toBe(60);
        expect(t.probs.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
      }
      expect(await redis.ttl(runKey(config.prefix, run.runId))).toBeGreaterThan(0);

      // One slot: the hash tag's. So one master holds every key of the prefix: BullMQ's and the project's.
      const byMaster = await keysByMaster(redis, prefixPattern(config.prefix));
      const holders = [...byMaster].filter(([, keys]) => keys.length > 0);
      expect(holders).toHaveLength(1);
      const keys = holders[0]![1];
      expect(keys).toContain(runKey(config.prefix, run.runId));
      expect(keys.some((k) => k.startsWith(`${config.prefix}:${QUEUE_NAMES.fetch}:`))).toBe(true);
      const tagSlot = (await redis.cluster('KEYSLOT', config.prefix.slice(1, -1))) as number;
      const slots = await Promise.all(keys.map((k) => redis.cluster('KEYSLOT', k) as Promise<number>));
      expect(new Set(slots)).toEqual(new Set([tagSlot]));

      await workers.close();
      await clearPrefix(redis, config.prefix);
      const left = await keysByMaster(redis, prefixPattern(config.prefix));
      expect([...left.values()].flat()).toEqual([]);
    } finally {
      await workers.close();
      await clearPrefix(redis, config.prefix).catch(() => undefined);
      await Promise.allSettled([flow.close(), reportQueue.close()]);
      await closeRedis(redis);
    }
  });

  it('finishes a run with every ticker once after kill -9 of a fetch worker process', async () => {
    const config = clusterConfig('cluster-crash');
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      REDIS_CLUSTER_NODES: cluster!.nodes,
      MOE_PREFIX: config.prefix,
      MOE_MODEL: modelPath,
      REPORTS_DIR: config.reportsDir,
      LOG_LEVEL: 'info',
      JOB_LOCK_MS: '2000',
      FEATURE_TTL_SECONDS: '600',
      RUN_TTL_SECONDS: '600',
    };
    const redis = createRedis(config, { role: 'worker' });
    const flow = new FlowProducer({ connection: redis, prefix: config.prefix });
    const eventsConn = createRedis(config, { role: 'worker' });
    const events = new QueueEvents(QUEUE_NAMES.report, { connection: eventsConn, prefix: config.prefix });
    const fetchQ = new Queue(QUEUE_NAMES.fetch, { connection: redis, prefix: config.prefix });
    const reportQ = new Queue(QUEUE_NAMES.report, { connection: redis, prefix: config.prefix });
    try {
      await events.waitUntilReady();
      const [fetchA] = await Promise.all([
        startWorkerProcess('fetch', env, running, ['--concurrency', '4', '--threads', '1']),
        startWorkerProcess('route,report', env, running, ['--threads', '1']),
      ]);
      const tickers = benchTickers(160);
      const t0 = Date.now();
      const run = await enqueueRun({ flow, redis, prefix: config.prefix, runTtlSeconds: 600 }, { tickers, source: 'sim', range: { days: 20 }, seed: 3 });
      while (Number((await redis.hget(runKey(config.prefix, run.runId), 'fetched')) ?? 0) < 20) await new Promise((r) => setTimeout(r, 20));
      // Freeze first, so the jobs it holds are still active when we look; then kill it for good.
      fetchA.child.kill('SIGSTOP');
      const held = (await fetchQ.getJobs(['active'], 0, -1)).map((j) => j.id!);
      expect(held.length).toBeGreaterThan(0);
      await stopWorkerProcess(fetchA, 'SIGKILL');

      const fetchB = await startWorkerProcess('fetch', env, running, ['--concurrency', '4', '--threads', '1']);
      const reportJob = (await reportQ.getJob(run.reportJobId))!;
      const result = (await reportJob.waitUntilFinished(events, 50_000)) as { reportDir: string };
      console.log(`redis-cluster: 160 tickers with a killed fetch worker in ${Date.now() - t0} ms`);
      const s = JSON.parse(await readFile(path.join(result.reportDir, REPORT_FILES.summaryJson), 'utf8')) as RunSummary;
      expectEveryTickerOnce(s, tickers);
      // The jobs the dead worker held were finished by the new one.
      for (const id of held) {
        const job = await fetchQ.getJob(id);
        expect(job?.finishedOn, id).toBeGreaterThan(0);
        expect(job?.processedBy, id).toContain(processedByTag(fetchB, 'fetch'));
      }
    } finally {
      await Promise.all(running.splice(0).map((p) => stopWorkerProcess(p, 'SIGKILL')));
      await clearPrefix(redis, config.prefix).catch(() => undefined);
      await Promise.allSettled([events.close(), fetchQ.close(), reportQ.close(), flow.close()]);
      await Promise.all([closeRedis(redis), closeRedis(eventsConn)]);
    }
  });
});

if (!haveTools) {
  it.skip('Redis Cluster: redis-server and redis-cli are not both on PATH, so no test cluster can be started', () => undefined);
}
