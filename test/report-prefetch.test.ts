import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FlowProducer, Queue, Worker } from 'bullmq';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeRedis, createRedis, type RedisClient } from '../jobs/connection.js';
import { jobIds, shardKey } from '../jobs/keys.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import type { ShardOutput } from '../jobs/payloads.js';
import { dailyAggregate } from '../src/report/daily.js';
import { sampleReportInput } from '../src/report/sample-input.js';
import { createLogger } from '../src/log.js';
import { ShardMerge } from '../workers/shard-merge.js';
import { ShardPrefetch } from '../workers/shard-prefetch.js';
import { startWorkers } from '../workers/start.js';
import { loadConfig } from '../src/config.js';
import { initParams, saveModel } from '../src/router/model.js';
import { benchTickers } from '../src/cli/bench-pipeline.js';
import { enqueueRun } from '../jobs/enqueue-run.js';
import { readRunMeta } from '../jobs/run-meta.js';
import { watchRun } from '../jobs/watch-run.js';
import { clearPrefix } from './helpers/redis.js';

/**
 * The report worker's shard prefetch: a run's shard outputs read and merged in shard order while the run is routed,
 * the same merge as the report job's own, handed to the report job once.
 */

const prefix = `t-prefetch-${randomUUID().slice(0, 8)}`;
const logger = createLogger({ name: 'prefetch', level: 'silent' });
let redis: RedisClient;
let events: RedisClient;

/** Four shards of three tickers (one shard with a failure), as route jobs store them. */
function outputs(runId: string, shards = 4): ShardOutput[] {
  const input = sampleReportInput({ seed: 11, tickers: shards * 3, days: 25, classes: ['Equities', 'Fixed Income', 'Commodities', 'Derivatives'] });
  return Array.from({ length: shards }, (_, shard) => ({
    runId,
    shard,
    tickers: input.summary.tickers.slice(shard * 3, shard * 3 + 3),
    failed: shard === 2 ? [{ ticker: `BAD${shard}`, reason: 'NO_DATA: none' }] : [],
    daily: dailyAggregate(input.series.slice(shard * 3, shard * 3 + 3)),
    backend: shard === 1 ? 'scalar' : 'simd-avx2',
    model: { path: `m${shard}`, hidden: 16, featureSpec: 'v6' },
    tokens: 75 + shard,
    fetchMs: 100 * (shard + 1) + 0.5,
    routeMs: 10.1 * (shard + 1),
    forwardMs: 1.7 * (shard + 1),
    contextMissing: shard === 3 ? ['UUP', 'GLD'] : [],
  }));
}

async function store(out: ShardOutput): Promise<void> {
  await redis.set(shardKey(prefix, out.runId, out.shard), JSON.stringify(out), 'EX', 300);
}

/** The report's own merge of the same outputs, in shard order. */
function direct(outs: ShardOutput[]): ShardMerge {
  const m = new ShardMerge();
  for (const o of outs) m.add(JSON.parse(JSON.stringify(o)) as ShardOutput);
  return m;
}

beforeAll(() => {
  redis = createRedis('redis://127.0.0.1:6379');
  events = createRedis('redis://127.0.0.1:6379', { role: 'worker' });
});

afterAll(async () => {
  await clearPrefix(redis, prefix);
  await closeRedis(events);
  await closeRedis(redis);
});

describe('ShardPrefetch', () => {
  it('merges the stored shards in order as their route jobs complete, and hands the merge over once', async () => {
    const runId = randomUUID();
    const outs = outputs(runId);
    const prefetch = new ShardPrefetch({ events, redis, prefix, logger });
    // Shard 1 completes first: nothing merges until shard 0 is in, then both do.
    await store(outs[1]!);
    prefetch.routed(jobIds.route(runId, 1));
    await expect.poll(() => prefetch.size).toBe(1);
    expect(prefetch.rows).toBe(0);
    await store(outs[0]!);
    prefetch.routed(jobIds.route(runId, 0));
    await expect.poll(() => prefetch.rows).toBe(6);
    await store(outs[2]!);
    prefetch.routed(jobIds.route(runId, 2));
    // The gate and other queues' ids are not route jobs.
    prefetch.routed(jobIds.gate(runId));
    prefetch.routed(jobIds.report(runId));

    const merge = await prefetch.take(runId);
    expect(merge?.next).toBe(3);
    const want = direct(outs.slice(0, 3));
    expect(merge).toEqual(want);
    expect(merge?.daily).toEqual(want.daily);
    expect([...merge!.backends]).toEqual(['simd-avx2', 'scalar']);
    expect(prefetch.size).toBe(0);

    // Taken: the last shard's event no longer starts the run again, and a second take gets nothing.
    await store(outs[3]!);
    prefetch.routed(jobIds.route(runId, 3));
    expect(prefetch.size).toBe(0);
    expect(await prefetch.take(runId)).toBeUndefined();

    // The report goes on from `next`: the same merge as one from the first shard.
    merge!.add(JSON.parse(JSON.stringify(outs[3])) as ShardOutput);
    expect(merge).toEqual(direct(outs));
    await prefetch.close();
  });

  it('stops at a malformed output, leaving it to the report job, and keeps what came before', async () => {
    const runId = randomUUID();
    const outs = outputs(runId);
    const prefetch = new ShardPrefetch({ events, redis, prefix, logger });
    await store(outs[0]!);
    await redis.set(shardKey(prefix, runId, 1), '{"not":"a shard"}', 'EX', 300);
    await store(outs[2]!);
    prefetch.routed(jobIds.route(runId, 2));
    const merge = await prefetch.take(runId);
    expect(merge?.next).toBe(1);
    expect(merge).toEqual(direct(outs.slice(0, 1)));
    await prefetch.close();
  });

  it('drops the least recently advanced run past its row bound, and does not start it again', async () => {
    const [a, b] = [randomUUID(), randomUUID()];
    const prefetch = new ShardPrefetch({ events, redis, prefix, logger, maxRows: 10 });
    const outsA = outputs(a, 2);
    const outsB = outputs(b, 2);
    for (const o of [...outsA, ...outsB]) await store(o);
    prefetch.routed(jobIds.route(a, 1));
    await expect.poll(() => prefetch.rows).toBe(6);
    // b's second shard takes the rows past 10: a, advanced longer ago, goes.
    prefetch.routed(jobIds.route(b, 1));
    await expect.poll(() => prefetch.size).toBe(1);
    expect(prefetch.rows).toBe(6);
    prefetch.routed(jobIds.route(a, 1));
    expect(prefetch.size).toBe(1);
    expect(await prefetch.take(a)).toBeUndefined();
    expect((await prefetch.take(b))?.next).toBe(2);
    await prefetch.close();
  });

  it('follows the route queue: a completed route job starts the merge of its run', async () => {
    const runId = randomUUID();
    const outs = outputs(runId, 2);
    const prefetch = new ShardPrefetch({ events, redis, prefix, logger });
    await prefetch.start();
    const queue = new Queue(QUEUE_NAMES.route, { connection: redis, prefix });
    const workerRedis = createRedis('redis://127.0.0.1:6379', { role: 'worker' });
    const worker = new Worker(QUEUE_NAMES.route, async (job) => ({ shard: (job.data as { shard: number }).shard }), { connection: workerRedis, prefix });
    try {
      for (const o of outs) {
        await store(o);
        await queue.add('route', { shard: o.shard }, { jobId: jobIds.route(runId, o.shard) });
      }
      await expect.poll(() => prefetch.rows, { timeout: 10_000 }).toBe(6);
      expect(await prefetch.take(runId)).toEqual(direct(outs));
    } finally {
      await worker.close();
      await closeRedis(workerRedis);
      await queue.close();
      await prefetch.close();
    }
  });

  it('hands a report job of a real pipeline the shards merged while its run was routed', async () => {
    const tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-prefetch-'));
    const modelPath = path.join(tmp, 'router.safetensors');
    await saveModel(modelPath, { hidden: 16, params: initParams(16, 5), temperature: 1 });
    const wPrefix = `${prefix}-w`;
    const config = loadConfig({ MOE_PREFIX: wPrefix, MOE_MODEL: modelPath, REPORTS_DIR: path.join(tmp, 'reports'), FEATURE_TTL_SECONDS: '600', RUN_TTL_SECONDS: '600' });
    const lines: string[] = [];
    const workers = await startWorkers({ config, logger: pino({ level: 'info' }, { write: (l: string) => void lines.push(l) }), featureThreads: 1, concurrency: { fetch: 2 } });
    const flow = new FlowProducer({ connection: redis, prefix: wPrefix });
    const reportQ = new Queue(QUEUE_NAMES.report, { connection: redis, prefix: wPrefix });
    try {
      // The report waits in its paused queue until every shard is routed and merged ahead.
      await reportQ.pause();
      const run = await enqueueRun({ flow, redis, prefix: wPrefix, runTtlSeconds: 600, shardSize: 3 }, { tickers: benchTickers(9), source: 'sim', range: { days: 20 }, seed: 4 });
      await expect.poll(async () => (await readRunMeta(redis, wPrefix, run.runId))?.shardsRouted, { timeout: 30_000, interval: 100 }).toBe(3);
      await expect.poll(() => workers.shardPrefetch?.rows, { timeout: 10_000 }).toBe(9);
      await reportQ.resume();
      const end = await watchRun({ redis, prefix: wPrefix, runId: run.runId, reportQueue: reportQ, intervalMs: 100, timeoutMs: 30_000 });
      expect(end).toMatchObject({ status: 'finished', routed: 9, failedTickers: 0 });
      // The run reads as finished a moment before the worker logs the report (it drops the run's keys in between).
      const logged = (runId: string) => lines.some((l) => l.includes('"report written"') && l.includes(runId));
      await expect.poll(() => logged(run.runId), { timeout: 10_000 }).toBe(true);
      const written = lines.map((l) => JSON.parse(l) as { msg: string; shardsAhead?: number; phasesMs?: Record<string, number> }).find((l) => l.msg === 'report written');
      expect(written?.shardsAhead).toBe(3);
      expect(Object.keys(written?.phasesMs ?? {})).toEqual(['enter', 'tickers', 'merge', 'previous', 'render', 'summaries', 'finish']);
      expect(workers.shardPrefetch?.size).toBe(0);

      // An output merged ahead but gone by the report (TTL): its tickers fail as EXPIRED, as without the prefetch.
      await reportQ.pause();
      const tickers = benchTickers(9);
      const again = await enqueueRun({ flow, redis, prefix: wPrefix, runTtlSeconds: 600, shardSize: 3 }, { tickers: tickers.slice(0, 6), source: 'sim', range: { days: 20 }, seed: 4 });
      await expect.poll(() => workers.shardPrefetch?.rows, { timeout: 30_000 }).toBe(6);
      expect(await redis.del(shardKey(wPrefix, again.runId, 1))).toBe(1);
      await reportQ.resume();
      const gone = await watchRun({ redis, prefix: wPrefix, runId: again.runId, reportQueue: reportQ, intervalMs: 100, timeoutMs: 30_000 });
      expect(gone).toMatchObject({ status: 'finished', routed: 3, failedTickers: 3 });
      const s = JSON.parse(await readFile(path.join(gone.reportDir!, 'summary.json'), 'utf8')) as { failed: { ticker: string; reason: string }[] };
      expect(s.failed.map((f) => f.ticker)).toEqual(tickers.slice(3, 6));
      for (const f of s.failed) expect(f.reason).toMatch(/^EXPIRED: the output of shard 1 /);
      await expect.poll(() => logged(again.runId), { timeout: 10_000 }).toBe(true);
      const second = lines.map((l) => JSON.parse(l) as { msg: string; runId?: string; shardsAhead?: number }).find((l) => l.msg === 'report written' && l.runId === again.runId);
      expect(second?.shardsAhead).toBe(0);
    } finally {
      await reportQ.resume();
      await workers.close();
      await Promise.allSettled([flow.close(), reportQ.close()]);
      await clearPrefix(redis, wPrefix);
      await rm(tmp, { recursive: true, force: true });
    }
  });
});
