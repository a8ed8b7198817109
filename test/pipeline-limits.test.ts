import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FlowProducer, Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clearPrefix } from './helpers/redis.js';
import { benchTickers } from '../src/cli/bench-pipeline.js';
import { loadConfig, type Config } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { QUEUE_NAMES, SCHEDULE_QUEUE } from '../jobs/queues.js';
import { initParams, saveModel } from '../src/router/model.js';
import { canonicalTickers, enqueueRun } from '../jobs/enqueue-run.js';
import { MAX_TICKERS } from '../src/limits.js';
import { validateRouteJobData } from '../jobs/payloads.js';
import { startWorkers, type RunningWorkers } from '../workers/start.js';

let tmp: string;
let config: Config;
let redis: Redis;
let workers: RunningWorkers;
const conns: Redis[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-limits-'));
  const modelPath = path.join(tmp, 'router.safetensors');
  await saveModel(modelPath, { hidden: 16, params: initParams(16, 3), temperature: 1 });
  config = loadConfig({ MOE_PREFIX: `t-lim-${randomUUID().slice(0, 8)}`, MOE_MODEL: modelPath, REPORTS_DIR: path.join(tmp, 'reports'), FEATURE_TTL_SECONDS: '600', RUN_TTL_SECONDS: '900' });
  redis = createRedis(config.redisUrl, { role: 'worker' });
  workers = await startWorkers({ config, roles: ['fetch', 'route', 'report', 'schedule'], logger: createLogger({ name: 'limits', level: 'silent' }), featureThreads: 1 });
});

afterAll(async () => {
  await workers?.close();
  if (redis) {
    await clearPrefix(redis, config.prefix);
    await Promise.all([closeRedis(redis), ...conns.map((c) => closeRedis(c))]);
  }
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

function events(queue: string): QueueEvents {
  const c = createRedis(config.redisUrl, { role: 'worker' });
  conns.push(c);
  return new QueueEvents(queue, { connection: c, prefix: config.prefix });
}

describe('limits and hygiene', () => {
  it('fails malformed jobs at every worker with the reason, and the workers go on with a good run', async () => {
    const bad: [string, unknown, string][] = [
      [QUEUE_NAMES.fetch, { runId: 'not-a-uuid', ticker: 'SPY', source: 'sim', range: { days: 5 } }, 'Invalid fetch payload: Expected run id (lower-case UUID) for runId but received "not-a-uuid"'],
      [QUEUE_NAMES.fetch, { runId: randomUUID(), ticker: 'SPY', source: 'sim', range: { days: 0 } }, 'Invalid fetch payload: Expected integer in 1..2520 for range.days but received 0 of type number'],
      [QUEUE_NAMES.route, { runId: randomUUID(), tickers: 'SPY' }, 'Invalid route payload: Expected array of 1..10000 tickers for tickers but received "SPY"'],
      [QUEUE_NAMES.report, { runId: randomUUID(), source: 'sim', tickers: ['SPY'], createdAt: 'yesterday' }, 'Invalid report payload: Expected ISO timestamp for createdAt but received "yesterday"'],
      [SCHEDULE_QUEUE, { universe: 'x', tickers: ['SPY'], source: 'csv', days: 5 }, 'Invalid scheduled run: Expected one of sim, yahoo (a csv folder is not shared between hosts) for source but received "csv"'],
    ];
    for (const [queueName, data, reason] of bad) {
      const ev = events(queueName);
      await ev.waitUntilReady();
      const q = new Queue(queueName, { connection: redis, prefix: config.prefix });
      const failed = new Promise<{ jobId: string; failedReason: string }>((resolve) => ev.on('failed', (e) => resolve(e)));
      const job = await q.add('malformed', data, { attempts: 3 });
      const f = await failed;
      expect(f.jobId).toBe(job.id);
      expect(f.failedReason).toBe(reason);
      // Permanent: one attempt, no retries.
      expect((await q.getJob(job.id!))!.attemptsMade).toBe(1);
      await Promise.all([q.close(), ev.close()]);
    }
    // The same worker processes still serve a run.
    const flow = new FlowProducer({ connection: redis, prefix: config.prefix });
    const ev = events(QUEUE_NAMES.report);
    await ev.waitUntilReady();
    const run = await enqueueRun({ flow, redis, prefix: config.prefix, runTtlSeconds: config.runTtlSeconds }, { tickers: ['SPY', 'TLT', 'GLD'], source: 'sim', range: { days: 10 } });
    const reportQ = new Queue(QUEUE_NAMES.report, { connection: redis, prefix: config.prefix });
    const result = (await (await reportQ.getJob(run.reportJobId))!.waitUntilFinished(ev, 60_000)) as { routed: number };
    expect(result.routed).toBe(3);

    // Every key the run left behind expires; the feature blocks are already gone.
    const runKeys: string[] = [];
    for await (const keys of redis.scanStream({ match: `${config.prefix}:run*`, count: 500 })) runKeys.push(...(keys as string[]));
    expect(runKeys.length).toBeGreaterThan(0);
    for (const k of runKeys) {
      expect(k).not.toContain(':feat:');
      const ttl = await redis.ttl(k);
      expect(ttl, k).toBeGreaterThan(0);
      expect(ttl, k).toBeLessThanOrEqual(900);
    }
    // And every job of the run is trimmed by age and by count once finished.
    for (const name of Object.values(QUEUE_NAMES)) {
      const q = new Queue(name, { connection: redis, prefix: config.prefix });
      const jobs = (await q.getJobs(['completed'], 0, -1)).filter((j) => (j.data as { runId?: string }).runId === run.runId);
      expect(jobs.length, name).toBeGreaterThan(0);
      for (const j of jobs) {
        expect(j.opts.removeOnComplete, name).toMatchObject({ age: expect.any(Number), count: expect.any(Number) });
        expect(j.opts.removeOnFail, name).toMatchObject({ age: expect.any(Number), count: expect.any(Number) });
      }
      await q.close();
    }
    await Promise.all([flow.close(), reportQ.close(), ev.close()]);
  });

  it('caps a run at 100,000 tickers and a route job (one shard) at 10,000, with clear errors', () => {
    expect(MAX_TICKERS).toBe(100_000);
    const all = benchTickers(100_000);
    expect(canonicalTickers(all)).toHaveLength(100_000);
    expect(() => canonicalTickers([...all, 'SPY'])).toThrow('Expected at most 100000 tickers for tickers but received 100001');
    const ten = all.slice(0, 10_000);
    expect(validateRouteJobData({ runId: randomUUID(), shard: 0, tickers: ten }).tickers).toHaveLength(10_000);
    const over = [...ten, 'SPY'];
    expect(() => validateRouteJobData({ runId: randomUUID(), shard: 0, tickers: over })).toThrow('Expected array of 1..10000 tickers for tickers but received array of length 10001');
  });
});
