import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FlowProducer, Queue, QueueEvents, type JobState } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestPipeline, type TestPipeline } from './helpers/pipeline.js';
import { clearPrefix } from './helpers/redis.js';
import { loadConfig, type Config } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { initParams, saveModel } from '../src/router/model.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { enqueueRun } from '../jobs/enqueue-run.js';
import { featureKey, jobIds, runKey } from '../jobs/keys.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import { updateRunMeta } from '../jobs/run-meta.js';
import { watchRun } from '../jobs/watch-run.js';
import { startWorkers, type RunningWorkers } from '../workers/start.js';

/**
 * A stage job that does not belong to the run it names (a stray one: another id, or a run that already ended)
 * once rewrote a finished run: a report job overwrote its report with ROUTE_FAILED and marked it failed, a route
 * job left it `routing` for good. Such jobs now fail and leave the run alone; a run's own jobs, retried after a
 * crash, still finish it.
 */

/** Name → sha256 and mtime of every file of a report folder. */
async function folderState(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of (await readdir(dir)).sort()) {
    const file = path.join(dir, f);
    out[f] = `${createHash('sha256').update(await readFile(file)).digest('hex')} ${(await stat(file)).mtimeMs}`;
  }
  return out;
}

describe('stray stage jobs of a finished run', () => {
  let p: TestPipeline;
  let events: Record<'fetch' | 'route' | 'report', QueueEvents>;
  let queues: Record<'fetch' | 'route' | 'report', Queue>;
  let eventsConn: Redis;

  beforeAll(async () => {
    p = await startTestPipeline('hardening-stray');
    eventsConn = createRedis(p.config.redisUrl, { role: 'worker' });
    const opts = { connection: eventsConn, prefix: p.config.prefix };
    events = {
      fetch: new QueueEvents(QUEUE_NAMES.fetch, opts),
      route: new QueueEvents(QUEUE_NAMES.route, opts),
      report: new QueueEvents(QUEUE_NAMES.report, opts),
    };
    queues = {
      fetch: new Queue(QUEUE_NAMES.fetch, { connection: p.redis, prefix: p.config.prefix }),
      route: new Queue(QUEUE_NAMES.route, { connection: p.redis, prefix: p.config.prefix }),
      report: new Queue(QUEUE_NAMES.report, { connection: p.redis, prefix: p.config.prefix }),
    };
    await Promise.all(Object.values(events).map((e) => e.waitUntilReady()));
  });
  afterAll(async () => {
    await Promise.allSettled([...Object.values(events ?? {}), ...Object.values(queues ?? {})].map((x) => x.close()));
    if (eventsConn) await closeRedis(eventsConn);
    await p?.close();
  });

  it('fails stray report and route jobs and leaves the run hash and its report as they were', async () => {
    const { run, meta } = await p.run({ tickers: ['SPY', 'TLT'], source: 'sim', range: { days: 20 } });
    expect(meta.status, JSON.stringify(meta)).toBe('finished');
    const key = runKey(p.config.prefix, run.runId);
    const hash = await p.redis.hgetall(key);
    const files = await folderState(meta.reportDir!);

    const reportData = { runId: run.runId, source: 'sim', createdAt: run.createdAt, shards: 1, shardSize: 1000 };
    const strayReport = await queues.report.add('report', reportData, { jobId: 'stray-report' });
    await expect(strayReport.waitUntilFinished(events.report, 30_000)).rejects.toThrow(
      `STRAY_JOB: Expected job id ${jobIds.report(run.runId)} for a report job of run ${run.runId} but received stray-report`,
    );

    const strayRoute = await queues.route.add('route', { runId: run.runId, shard: 0, tickers: run.tickers }, { jobId: 'stray-route' });
    await expect(strayRoute.waitUntilFinished(events.route, 30_000)).rejects.toThrow(
      `STRAY_JOB: Expected job id ${jobIds.route(run.runId, 0)} for a route job of run ${run.runId} but received stray-route`,
    );

    // The run's own route id, added again once the first job is gone (trimmed): the run has ended, so it is stray.
    await queues.route.remove(jobIds.route(run.runId, 0));
    const late = await queues.route.add('route', { runId: run.runId, shard: 0, tickers: run.tickers }, { jobId: jobIds.route(run.runId, 0) });
    await expect(late.waitUntilFinished(events.route, 30_000)).rejects.toThrow(
      `STRAY_JOB: Expected run ${run.runId} to be queued or routing for its route job but it is finished`,
    );

    // Malformed, naming the run: its failure must not mark the run failed either.
    const malformed = await queues.report.add('report', { ...reportData, createdAt: 'yesterday' }, { jobId: 'stray-malformed' });
    await expect(malformed.waitUntilFinished(events.report, 30_000)).rejects.toThrow(
      'Invalid report payload: Expected ISO timestamp for createdAt but received "yesterday"',
    );

    // A fetch job computes its features, then finds the run ended: no block stored, no counter moved.
    const strayFetch = await queues.fetch.add('fetch', { runId: run.runId, ticker: 'GLD', source: 'sim', range: { days: 20 } }, { jobId: 'stray-fetch' });
    await expect(strayFetch.waitUntilFinished(events.fetch, 30_000)).rejects.toThrow(
      `STRAY_JOB: Expected run ${run.runId} to be in progress for its fetch job but it is finished`,
    );
    expect(await p.redis.exists(featureKey(p.config.prefix, run.runId, 'GLD'))).toBe(0);

    for (const id of ['stray-report', 'stray-malformed']) expect(await queues.report.getJob(id).then((j) => j?.attemptsMade)).toBe(1);
    expect(await p.redis.hgetall(key)).toEqual(hash);
    expect(await folderState(meta.reportDir!)).toEqual(files);
    expect(await queues.report.getJobState(run.reportJobId)).toBe('completed');
  });
});

describe("a run's own route and report jobs retried after a crash", () => {
  let tmp: string;
  let config: Config;
  let redis: Redis;
  let flow: FlowProducer;
  const started: RunningWorkers[] = [];
  const logger = createLogger({ name: 'hardening-retry', level: 'silent' });

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-hardening-retry-'));
    const modelPath = path.join(tmp, 'router.safetensors');
    await saveModel(modelPath, { hidden: 16, params: initParams(16, 11), temperature: 1 });
    config = loadConfig({
      MOE_PREFIX: `t-hardening-retry-${randomUUID().slice(0, 8)}`,
      MOE_MODEL: modelPath,
      REPORTS_DIR: path.join(tmp, 'reports'),
      RUN_TTL_SECONDS: '600',
    });
    redis = createRedis(config.redisUrl);
    flow = new FlowProducer({ connection: redis, prefix: config.prefix });
  });
  afterEach(async () => {
    await Promise.all(started.splice(0).map((w) => w.close()));
  });
  afterAll(async () => {
    await flow?.close();
    if (redis) {
      await clearPrefix(redis, config.prefix);
      await closeRedis(redis);
    }
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /** Polls the job's state (a few times a second) until it is `want`. */
  async function reach(queue: string, jobId: string, want: JobState): Promise<void> {
    const q = new Queue(queue, { connection: redis, prefix: config.prefix });
    try {
      const deadline = Date.now() + 30_000;
      for (let s = await q.getJobState(jobId); s !== want; s = await q.getJobState(jobId)) {
        if (Date.now() > deadline) throw new Error(`${jobId} is ${s}, not ${want}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      await q.close();
    }
  }

  async function serve(role: 'fetch' | 'route' | 'report'): Promise<void> {
    started.push(await startWorkers({ config, roles: [role], logger, featureThreads: 1 }));
  }

  it('routes a run left `routing` and reports a run left `reporting`', async () => {
    const store = { redis, prefix: config.prefix, ttlSeconds: config.runTtlSeconds };
    await serve('fetch');
    const run = await enqueueRun({ flow, redis, ...{ prefix: config.prefix, runTtlSeconds: config.runTtlSeconds } }, { tickers: ['SPY', 'GLD'], source: 'sim', range: { days: 20 } });
    await reach(QUEUE_NAMES.route, jobIds.route(run.runId, 0), 'waiting');
    // What a route worker killed after its first step leaves behind.
    await updateRunMeta(store, run.runId, { status: 'routing' });
    await serve('route');
    await reach(QUEUE_NAMES.route, jobIds.route(run.runId, 0), 'completed');
    // What a report worker killed while rendering leaves behind.
    await updateRunMeta(store, run.runId, { status: 'reporting' });
    await serve('report');
    const reportQueue = new Queue(QUEUE_NAMES.report, { connection: redis, prefix: config.prefix });
    try {
      const meta = await watchRun({ redis, prefix: config.prefix, runId: run.runId, reportQueue, intervalMs: 100, timeoutMs: 40_000 });
      expect(meta.status, JSON.stringify(meta)).toBe('finished');
      expect(meta.routed).toBe(2);
    } finally {
      await reportQueue.close();
    }
  });
});
