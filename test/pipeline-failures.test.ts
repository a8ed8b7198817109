import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { CONTEXT_TICKERS } from '../src/data/features/context.js';
import { FlowProducer, Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Piscina } from 'piscina';
import { clearPrefix } from './helpers/redis.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../src/config.js';
import { decodeFeatureSeries } from '../src/data/features/block.js';
import { SourceError } from '../src/data/errors.js';
import { createSource, type DataSource } from '../src/data/sources/create.js';
import { createLogger } from '../src/log.js';
import { initParams, saveModel } from '../src/router/model.js';
import { REPORT_FILES, type RunSummary } from '../src/report/types.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { featureKey, jobIds } from '../jobs/keys.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import { createRunMeta, readRunMeta } from '../jobs/run-meta.js';
import { watchRun } from '../jobs/watch-run.js';
import { enqueueRun } from '../jobs/enqueue-run.js';
import type { FetchJobData } from '../jobs/payloads.js';
import { createFetchProcessor } from '../workers/fetch.js';
import { createFeaturePool } from '../workers/pool.js';
import { startWorkers } from '../workers/start.js';

const logger = createLogger({ name: 'failures', level: 'silent' });
let tmp: string;
let config: Config;
let redis: Redis;
let pool: Piscina;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-fail-'));
  const modelPath = path.join(tmp, 'router.safetensors');
  await saveModel(modelPath, { hidden: 16, params: initParams(16, 5), temperature: 1 });
  config = loadConfig({ MOE_PREFIX: `t-fail-${randomUUID().slice(0, 8)}`, MOE_MODEL: modelPath, REPORTS_DIR: path.join(tmp, 'reports') });
  redis = createRedis(config.redisUrl);
  pool = createFeaturePool(1);
});

afterAll(async () => {
  await pool?.destroy();
  if (redis) {
    await clearPrefix(redis, config.prefix);
    await closeRedis(redis);
  }
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** A source that throws the given errors in turn, then delegates to the simulator. */
function flakySource(errors: Error[]): { factory: typeof createSource; calls: () => number } {
  let calls = 0;
  const sim = createSource({ source: 'sim', seed: 1 });
  const src: DataSource = {
    name: 'sim',
    fetch: async (ticker, range) => {
      const e = errors[calls++];
      if (e) throw e;
      return sim.fetch(ticker, range);
    },
  };
  return { factory: () => src, calls: () => calls };
}

function fakeJob(data: unknown, attemptsMade = 0, attempts = 3): Job {
  return { id: 'j', data, attemptsMade, opts: { attempts } } as unknown as Job;
}

describe('fetch processor', () => {
  const runId = randomUUID();
  const data: FetchJobData = { runId, ticker: 'TLT', source: 'sim', range: { days: 20 } };

  function processor(errors: Error[] = []) {
    const s = flakySource(errors);
    const p = createFetchProcessor({
      redis,
      prefix: config.prefix,
      featureTtlSeconds: 120,
      runTtlSeconds: 120,
      hidden: 16,
      pool,
      logger,
      sourceFactory: s.factory,
    });
    return { p, calls: s.calls };
  }

  it('stores the feature block with a TTL and returns its key and summary', async () => {
    const { p } = processor();
    const out = await p(fakeJob(data));
    expect(out).toMatchObject({ key: featureKey(config.prefix, runId, 'TLT'), ticker: 'TLT', days: 20, class: 'Fixed Income' });
    const ttl = await redis.ttl(out.key);
    expect(ttl).toBeGreaterThan(100);
    expect(ttl).toBeLessThanOrEqual(120);
    const series = decodeFeatureSeries((await redis.getBuffer(out.key))!);
    expect(series.ticker).toBe('TLT');
    expect(series.hidden).toBe(16);
    expect(series.dates.length).toBe(20);
  });

  it('fails a malformed payload permanently, naming the field', async () => {
    const { p, calls } = processor();
    const err = await p(fakeJob({ ...data, range: { days: 0 } })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnrecoverableError);
    expect((err as Error).message).toBe('Invalid fetch payload: Expected integer in 1..2520 for range.days but received 0 of type number');
    expect(calls()).toBe(0);
  });

  it('fails unknown tickers and bad data permanently, keeping the source code in the reason', async () => {
    for (const code of ['UNKNOWN_TICKER', 'NO_DATA', 'BAD_DATA'] as const) {
      const { p } = processor([new SourceError(code, 'TLT', `why ${code}`)]);
      const err = await p(fakeJob(data)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnrecoverableError);
      expect((err as Error).message).toBe(`${code}: why ${code}`);
    }
  });

  it('lets network failures retry and counts a ticker as failed only after its last attempt', async () => {
    const meta = { runId, source: 'sim' as const, tickers: ['TLT'], createdAt: new Date().toISOString() };
    await createRunMeta({ redis, prefix: config.prefix, ttlSeconds: 120 }, meta);
    const transient = new SourceError('FETCH_FAILED', 'TLT', 'HTTP 503');
    const first = processor([transient]);
    const err = await first.p(fakeJob(data, 0)).catch((e: unknown) => e);
    expect(err).toBe(transient);
    expect((await readRunMeta(redis, config.prefix, runId))!.fetchFailed).toBe(0);
    const last = processor([transient]);
    await last.p(fakeJob(data, 2)).catch((e: unknown) => e);
    expect((await readRunMeta(redis, config.prefix, runId))!.fetchFailed).toBe(1);
  });

  it('retries through BullMQ with backoff until the source answers', async () => {
    const s = flakySource([new SourceError('FETCH_FAILED', 'GLD', 'HTTP 429'), new SourceError('FETCH_FAILED', 'GLD', 'HTTP 502')]);
    const p = createFetchProcessor({ redis, prefix: config.prefix, featureTtlSeconds: 60, runTtlSeconds: 60, hidden: 16, pool, logger, sourceFactory: s.factory });
    const queue = new Queue(QUEUE_NAMES.fetch, { connection: redis, prefix: config.prefix });
    const wr = createRedis(config.redisUrl, { role: 'worker' });
    const worker = new Worker(QUEUE_NAMES.fetch, p, { connection: wr, prefix: config.prefix });
    try {
      const done = new Promise<Job>((resolve, reject) => {
        worker.on('completed', (job) => resolve(job));
        worker.on('failed', (job, err) => {
          if (job && job.attemptsMade >= 3) reject(err);
        });
      });
      const id = jobIds.fetch(runId, 'GLD');
      // Short backoff: the production 1 s exponential delay would make this test take 3 s for nothing.
      await queue.add('fetch', { ...data, ticker: 'GLD' }, { jobId: id, attempts: 3, backoff: { type: 'fixed', delay: 50 } });
      const job = await done;
      expect(job.id).toBe(id);
      // Two failed attempts and the successful third (BullMQ counts every finished attempt); the run's context set
      // is fetched once, after the ticker's own bars arrived.
      expect(job.attemptsMade).toBe(3);
      expect(s.calls()).toBe(3 + CONTEXT_TICKERS.length);
      expect(job.returnvalue).toMatchObject({ ticker: 'GLD', days: 20 });
    } finally {
      await worker.close();
      await queue.close();
      await closeRedis(wr);
    }
  });
});

describe('route stage failure', () => {
  it('still produces a report that lists every ticker with the routing error', async () => {
    const fr = createRedis(config.redisUrl);
    const flow = new FlowProducer({ connection: fr, prefix: config.prefix });
    const reportQueue = new Queue(QUEUE_NAMES.report, { connection: fr, prefix: config.prefix });
    const running = await startWorkers({ config, roles: ['fetch', 'report'], logger, featureThreads: 1 });
    const wr = createRedis(config.redisUrl, { role: 'worker' });
    const broken = new Worker(
      QUEUE_NAMES.route,
      async () => {
        throw new UnrecoverableError('device lost');
      },
      { connection: wr, prefix: config.prefix },
    );
    try {
      const run = await enqueueRun({ flow, redis: fr, prefix: config.prefix, runTtlSeconds: 120 }, { tickers: ['SPY', 'GLD'], source: 'sim', range: { days: 20 } });
      const meta = await watchRun({ redis: fr, prefix: config.prefix, runId: run.runId, reportQueue, intervalMs: 100, timeoutMs: 40_000 });
      expect(meta.status).toBe('failed');
      const s = JSON.parse(await readFile(path.join(meta.reportDir!, REPORT_FILES.summaryJson), 'utf8')) as RunSummary;
      expect(s.tickers).toEqual([]);
      expect(s.backend).toBe('none');
      expect(s.failed).toEqual([
        { ticker: 'SPY', reason: 'ROUTE_FAILED: device lost' },
        { ticker: 'GLD', reason: 'ROUTE_FAILED: device lost' },
      ]);
    } finally {
      await broken.close();
      await closeRedis(wr);
      await running.close();
      await Promise.allSettled([flow.close(), reportQueue.close()]);
      await closeRedis(fr);
    }
  });
});
