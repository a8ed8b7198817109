import { randomUUID } from 'node:crypto';
import { FlowProducer, Queue, type Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { benchTickers } from '../src/cli/bench-pipeline.js';
import { runView } from '../src/dashboard/runs.js';
import { runPage } from '../src/dashboard/html.js';
import type { RunSummary } from '../src/report/types.js';
import { MAX_SHARDS } from '../src/limits.js';
import { closeRedis, createRedis, scanKeys, type RedisClient } from '../jobs/connection.js';
import { enqueueRun, shardPlan } from '../jobs/enqueue-run.js';
import { jobIds, runKey, shardKey } from '../jobs/keys.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import { createRunMeta, readRunMeta, storeShardOutput } from '../jobs/run-meta.js';
import { watchRun } from '../jobs/watch-run.js';
import { validateReportJobData, validateRouteJobData, type ShardOutput } from '../jobs/payloads.js';
import { createRouteProcessor, openRouter } from '../workers/route.js';
import { dailyAggregate } from '../src/report/daily.js';
import { createLogger } from '../src/log.js';
import { startTestPipeline, type TestPipeline } from './helpers/pipeline.js';
import { clearPrefix } from './helpers/redis.js';

/**
 * Sharded runs: report ← route job per shard ← the shard's fetch jobs. A run cut into shards must give the report
 * of the same run in one shard.
 */

describe('a run cut into shards', () => {
  let p: TestPipeline;
  beforeAll(async () => {
    p = await startTestPipeline('shards', { MOE_SHARD_SIZE: '4' });
  });
  afterAll(async () => {
    await p?.close();
  });

  it('routes every ticker exactly once, and its summary equals the same run in one shard', async () => {
    // 13 good tickers over every domain and one the simulator does not know: four shards of 4, 4, 4 and 2.
    const tickers = [...benchTickers(13), 'NOSUCH1'];
    tickers.splice(6, 0, tickers.pop()!);
    const req = { tickers, source: 'sim' as const, range: { days: 30 }, seed: 9 };
    const sharded = await p.run(req);
    expect(sharded.run.shards).toBe(4);
    expect(sharded.meta).toMatchObject({ status: 'finished', shards: 4, shardsRouted: 4, routed: 13, failedTickers: 1 });
    const one = await p.run(req, 1000);
    expect(one.run.shards).toBe(1);
    expect(one.meta).toMatchObject({ status: 'finished', shards: 1, shardsRouted: 1 });

    const a = await p.summary(sharded.meta);
    const b = await p.summary(one.meta);
    // Every ticker once, in request order, whichever shard routed it.
    expect(a.tickers.map((t) => t.ticker)).toEqual(tickers.filter((t) => t !== 'NOSUCH1'));
    expect(a.failed).toEqual(b.failed);
    expect(a.failed.map((f) => f.ticker)).toEqual(['NOSUCH1']);
    expect(a.failed[0]!.reason).toMatch(/^UNKNOWN_TICKER: /);
    const same = (s: RunSummary) => s.tickers.map(({ ticker, domain, days, domainDays, firstDate, lastDate, class: c }) => ({ ticker, domain, days, domainDays, firstDate, lastDate, c }));
    expect(same(a)).toEqual(same(b));
    a.tickers.forEach((t, i) => {
      const u = b.tickers[i]!;
      expect(t.confidence).toBeCloseTo(u.confidence, 6);
      t.probs.forEach((x, d) => expect(x).toBeCloseTo(u.probs[d]!, 6));
      expect(t.totalReturn).toBeCloseTo(u.totalReturn, 9);
      expect(t.reasons?.map((r) => r.feature)).toEqual(u.reasons?.map((r) => r.feature));
    });
    expect(a.tokens).toBe(b.tokens);
    expect(a.routing.counts).toEqual(b.routing.counts);
    expect(a.routing.meanConfidence).toBeCloseTo(b.routing.meanConfidence, 6);
    expect(a.universe).toBe(b.universe);
    expect(a.backend).toBe(b.backend);

    // One route job per shard, each with its own tickers in request order.
    const routeQ = new Queue(QUEUE_NAMES.route, { connection: p.redis, prefix: p.config.prefix });
    try {
      const shards = await Promise.all([0, 1, 2, 3].map((i) => routeQ.getJob(jobIds.route(sharded.run.runId, i))));
      expect(shards.map((j) => validateRouteJobData(j!.data).tickers)).toEqual([tickers.slice(0, 4), tickers.slice(4, 8), tickers.slice(8, 12), tickers.slice(12)]);
      expect(shards.map((j) => (j!.returnvalue as { routed: number; failed: number }).failed)).toEqual([0, 1, 0, 0]);
    } finally {
      await routeQ.close();
    }
    // Nothing of either run is left in Redis but its hash: feature blocks and shard outputs are gone.
    for (const { run } of [sharded, one]) {
      const left: string[] = [];
      for await (const keys of scanKeys(p.redis, `${runKey(p.config.prefix, run.runId)}:*`)) left.push(...keys);
      expect(left).toEqual([]);
    }

    // The run page shows the shards routed out of the run's.
    const html = runPage(await runView(sharded.meta, p.config.reportsDir), undefined);
    expect(html).toContain('<dt>shards</dt><dd>4 of 4 routed</dd>');
  });

  it('returns the output an earlier attempt stored instead of routing the shard again, counting the shard once', async () => {
    const runId = randomUUID();
    const store = { redis: p.redis, prefix: p.config.prefix, ttlSeconds: 60 };
    await createRunMeta(store, { runId, source: 'sim', tickers: ['SPY', 'TLT'], createdAt: new Date().toISOString() });
    const output: ShardOutput = {
      runId,
      shard: 0,
      tickers: [],
      failed: [
        { ticker: 'SPY', reason: 'NO_DATA: test' },
        { ticker: 'TLT', reason: 'NO_DATA: test' },
      ],
      daily: dailyAggregate([]),
      backend: 'scalar',
      model: { path: p.config.modelPath, hidden: 16, featureSpec: 'test' },
      tokens: 0,
      fetchMs: 1,
      routeMs: 2,
      forwardMs: 0,
      contextMissing: [],
    };
    const key = shardKey(p.config.prefix, runId, 0);
    await storeShardOutput(store, runId, key, JSON.stringify(output), 60);
    const loaded = await openRouter(p.config.modelPath, 'cpu');
    try {
      const route = createRouteProcessor({ ...store, featureTtlSeconds: 60, runTtlSeconds: 60, loaded, logger: createLogger({ name: 'shards', level: 'silent' }) });
      const untouched = () => Promise.reject(new Error('the fetch results were read again'));
      const job = {
        id: jobIds.route(runId, 0),
        data: { runId, shard: 0, tickers: ['SPY', 'TLT'] },
        attemptsMade: 1,
        opts: { attempts: 2 },
        timestamp: Date.now(),
        processedOn: Date.now(),
        getChildrenValues: untouched,
        getIgnoredChildrenFailures: untouched,
      } as unknown as Job;
      expect(await route(job)).toEqual({ runId, shard: 0, outputKey: key, routed: 0, failed: 2, backend: 'scalar', tokens: 0, fetchMs: 1, routeMs: 2, forwardMs: 0 });
      expect(await readRunMeta(p.redis, p.config.prefix, runId)).toMatchObject({ status: 'routing', shardsRouted: 1 });
    } finally {
      loaded.router.close();
    }
  });

  it('lists the tickers of a shard whose output is gone as failed, and reports the other shards', async () => {
    const reportQ = new Queue(QUEUE_NAMES.report, { connection: p.redis, prefix: p.config.prefix });
    const flow = new FlowProducer({ connection: p.redis, prefix: p.config.prefix });
    try {
      // The report waits in its paused queue until every shard is routed and one output has been removed.
      await reportQ.pause();
      const tickers = benchTickers(10);
      const run = await enqueueRun(
        { flow, redis: p.redis, prefix: p.config.prefix, runTtlSeconds: p.config.runTtlSeconds, shardSize: 4 },
        { tickers, source: 'sim', range: { days: 20 }, seed: 2 },
      );
      expect(run.shards).toBe(3);
      await expect.poll(async () => (await readRunMeta(p.redis, p.config.prefix, run.runId))?.shardsRouted, { timeout: 30_000, interval: 100 }).toBe(3);
      expect(await p.redis.del(shardKey(p.config.prefix, run.runId, 1))).toBe(1);
      await reportQ.resume();
      const end = await watchRun({ redis: p.redis, prefix: p.config.prefix, runId: run.runId, reportQueue: reportQ, intervalMs: 100, timeoutMs: 30_000 });
      expect(end).toMatchObject({ status: 'finished', routed: 6, failedTickers: 4 });
      const s = await p.summary(end);
      expect(s.tickers.map((t) => t.ticker)).toEqual([...tickers.slice(0, 4), ...tickers.slice(8)]);
      expect(s.failed.map((f) => f.ticker)).toEqual(tickers.slice(4, 8));
      for (const f of s.failed) expect(f.reason).toBe(`EXPIRED: the output of shard 1 (${shardKey(p.config.prefix, run.runId, 1)}) is gone (TTL passed before reporting)`);
    } finally {
      await reportQ.resume();
      await Promise.all([reportQ.close(), flow.close()]);
    }
  });

  it('ends a run whose enqueue was cut short once its gate runs out, keeping the enqueue error, with nothing left waiting', async () => {
    const reportQ = new Queue(QUEUE_NAMES.report, { connection: p.redis, prefix: p.config.prefix });
    const routeQ = new Queue(QUEUE_NAMES.route, { connection: p.redis, prefix: p.config.prefix });
    const flow = new FlowProducer({ connection: p.redis, prefix: p.config.prefix });
    let calls = 0;
    const dying = {
      add: (...args: Parameters<FlowProducer['add']>) => (++calls > 2 ? Promise.reject(new Error('producer killed')) : flow.add(...args)),
    } as unknown as FlowProducer;
    try {
      const runId = randomUUID();
      const ctx = { flow: dying, redis: p.redis, prefix: p.config.prefix, runTtlSeconds: p.config.runTtlSeconds, shardSize: 4 };
      await expect(enqueueRun(ctx, { tickers: benchTickers(10), source: 'sim', range: { days: 20 }, seed: 2 }, { runId })).rejects.toThrow('producer killed');
      // The run has failed: shard 0's jobs end without routing (a stage job never revives an ended run), and the
      // report waits behind the gate.
      await expect.poll(async () => routeQ.getJobState(jobIds.route(runId, 0)), { timeout: 30_000, interval: 100 }).toMatch(/^(completed|failed)$/);
      expect((await readRunMeta(p.redis, p.config.prefix, runId))?.shardsRouted).toBe(0);
      expect(await reportQ.getJobState(jobIds.report(runId))).toBe('waiting-children');
      // The delay running out, without the wait: a route worker completes the gate and the report job runs.
      await (await routeQ.getJob(jobIds.gate(runId)))!.promote();
      await expect.poll(async () => routeQ.getJobState(jobIds.gate(runId)), { timeout: 30_000, interval: 100 }).toBe('completed');
      await expect.poll(async () => reportQ.getJobState(jobIds.report(runId)), { timeout: 30_000, interval: 100 }).toMatch(/^(completed|failed)$/);
      expect(await readRunMeta(p.redis, p.config.prefix, runId)).toMatchObject({ status: 'failed', error: 'enqueue failed: producer killed' });
    } finally {
      await Promise.all([reportQ.close(), routeQ.close(), flow.close()]);
    }
  });
});

describe('enqueueing large runs', () => {
  let redis: RedisClient;
  let flow: FlowProducer;
  const prefix = `t-shard-enq-${randomUUID().slice(0, 8)}`;
  beforeAll(() => {
    redis = createRedis('redis://127.0.0.1:6379');
    flow = new FlowProducer({ connection: redis, prefix });
  });
  afterAll(async () => {
    await clearPrefix(redis, prefix);
    await flow.close();
    await closeRedis(redis);
  });

  it('accepts 20,000 tickers as 20 shards of 1,000, with no ticker list in the report payload', async () => {
    const tickers = benchTickers(20_000);
    const run = await enqueueRun({ flow, redis, prefix, runTtlSeconds: 600 }, { tickers, source: 'sim', range: { days: 5 } });
    expect(run.tickers).toHaveLength(20_000);
    expect(run.shards).toBe(20);
    const meta = await readRunMeta(redis, prefix, run.runId);
    expect(meta).toMatchObject({ status: 'queued', shards: 20, shardsRouted: 0 });
    expect(meta!.tickers).toEqual(tickers);
    const reportQ = new Queue(QUEUE_NAMES.report, { connection: redis, prefix });
    const routeQ = new Queue(QUEUE_NAMES.route, { connection: redis, prefix });
    try {
      const report = (await reportQ.getJob(run.reportJobId))!;
      expect(validateReportJobData(report.data)).toEqual({ runId: run.runId, source: 'sim', createdAt: run.createdAt, shards: 20, shardSize: 1000 });
      expect(JSON.stringify(report.data).length).toBeLessThan(200);
      const last = (await routeQ.getJob(jobIds.route(run.runId, 19)))!;
      expect(validateRouteJobData(last.data).tickers).toEqual(tickers.slice(19_000));
      // Each route job waits for its own shard's fetch jobs only.
      expect((await last.getDependenciesCount()).unprocessed).toBe(1000);
      // The report waits for its 20 shards; the gate that held it while they were added is gone.
      expect((await report.getDependenciesCount()).unprocessed).toBe(20);
      expect(await routeQ.getJobState(jobIds.gate(run.runId))).toBe('unknown');
    } finally {
      await Promise.all([reportQ.close(), routeQ.close()]);
    }
  });

  it('completes an enqueue that was cut short when the same run id is enqueued again, and leaves a complete one alone', async () => {
    const tickers = benchTickers(50);
    const runId = randomUUID();
    const ctx = { flow, redis, prefix, runTtlSeconds: 600, shardSize: 10 };
    // A producer that dies after the report and two of five shards are in.
    let calls = 0;
    const dying = {
      add: (...args: Parameters<FlowProducer['add']>) => {
        if (++calls > 3) return Promise.reject(new Error('connection lost'));
        return flow.add(...args);
      },
    } as unknown as FlowProducer;
    await expect(enqueueRun({ ...ctx, flow: dying }, { tickers, source: 'sim', range: { days: 5 } }, { runId })).rejects.toThrow('connection lost');
    const reportQ = new Queue(QUEUE_NAMES.report, { connection: redis, prefix });
    const routeQ = new Queue(QUEUE_NAMES.route, { connection: redis, prefix });
    try {
      // The gate stays shut: without the missing shards the report must not run.
      expect(await routeQ.getJobState(jobIds.gate(runId))).toBe('delayed');
      expect(await routeQ.getJobState(jobIds.route(runId, 1))).toBe('waiting-children');
      expect(await routeQ.getJobState(jobIds.route(runId, 2))).toBe('unknown');
      expect(await readRunMeta(redis, prefix, runId)).toMatchObject({ status: 'failed', error: 'enqueue failed: connection lost' });

      const again = await enqueueRun(ctx, { tickers, source: 'sim', range: { days: 5 } }, { runId });
      expect(again.shards).toBe(5);
      expect(await readRunMeta(redis, prefix, runId)).toMatchObject({ status: 'queued', shards: 5 });
      for (let shard = 0; shard < 5; shard++) expect(await routeQ.getJobState(jobIds.route(runId, shard))).toBe('waiting-children');
      expect(await routeQ.getJobState(jobIds.gate(runId))).toBe('unknown');
      const report = (await reportQ.getJob(jobIds.report(runId)))!;
      expect((await report.getDependenciesCount()).unprocessed).toBe(5);
      const fetchQ = new Queue(QUEUE_NAMES.fetch, { connection: redis, prefix });
      expect(await fetchQ.getWaitingCount()).toBeGreaterThanOrEqual(50);
      await fetchQ.close();

      // Once its gate is gone a run is past its enqueue: a third call adds nothing.
      const adds = calls;
      await enqueueRun({ ...ctx, flow: dying }, { tickers, source: 'sim', range: { days: 5 } }, { runId });
      expect(calls).toBe(adds);
    } finally {
      await Promise.all([reportQ.close(), routeQ.close()]);
    }
  });

  it('plans shards of the configured size, larger when a run would need more than MAX_SHARDS', () => {
    expect(shardPlan(14, 4)).toEqual({ shards: 4, size: 4 });
    expect(shardPlan(1000)).toEqual({ shards: 1, size: 1000 });
    expect(shardPlan(1001)).toEqual({ shards: 2, size: 1000 });
    expect(shardPlan(100_000, 10)).toEqual({ shards: MAX_SHARDS, size: 100 });
    expect(shardPlan(100_000, 1)).toEqual({ shards: MAX_SHARDS, size: 100 });
    expect(() => shardPlan(5, 0)).toThrow('Expected integer in 1..10000 for shardSize but received 0');
  });
});
