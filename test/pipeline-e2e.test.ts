import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { FlowProducer, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { clearPrefix } from './helpers/redis.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../src/config.js';
import { DOMAINS } from '../src/domains.js';
import { DEFAULT_UNIVERSE } from '../src/data/universe.js';
import { createLogger } from '../src/log.js';
import { initParams, saveModel } from '../src/router/model.js';
import { REPORT_FILES, type RunSummary } from '../src/report/types.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { featureKey, runKey } from '../jobs/keys.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import { watchRun } from '../jobs/watch-run.js';
import { enqueueRun, type RunRequest } from '../jobs/enqueue-run.js';
import { startWorkers, type RunningWorkers } from '../workers/start.js';
import { expectDrawnPng } from './helpers/png.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MARKET_DATA = path.resolve(REPO, '../shared/market-data');

let tmp: string;
let config: Config;
let redis: Redis;
let flow: FlowProducer;
let reportQueue: Queue;
let workers: RunningWorkers;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-e2e-'));
  // A seeded random-init model: the pipeline is under test here, not the shipped model's accuracy.
  const modelPath = path.join(tmp, 'router.safetensors');
  await saveModel(modelPath, { hidden: 16, params: initParams(16, 11), temperature: 1 });
  config = loadConfig({
    MOE_PREFIX: `t-e2e-${randomUUID().slice(0, 8)}`,
    MOE_MODEL: modelPath,
    REPORTS_DIR: path.join(tmp, 'reports'),
    FEATURE_TTL_SECONDS: '600',
    RUN_TTL_SECONDS: '600',
  });
  redis = createRedis(config.redisUrl);
  flow = new FlowProducer({ connection: redis, prefix: config.prefix });
  reportQueue = new Queue(QUEUE_NAMES.report, { connection: redis, prefix: config.prefix });
  workers = await startWorkers({
    config,
    logger: createLogger({ name: 'e2e', level: 'silent' }),
    featureThreads: 1,
    concurrency: { fetch: 2 },
  });
});

afterAll(async () => {
  await workers?.close();
  if (redis) {
    await clearPrefix(redis, config.prefix);
    await Promise.allSettled([flow.close(), reportQueue.close()]);
    await closeRedis(redis);
  }
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

async function runToEnd(req: RunRequest) {
  const t0 = Date.now();
  const run = await enqueueRun({ flow, redis, prefix: config.prefix, runTtlSeconds: config.runTtlSeconds }, req);
  const meta = await watchRun({ redis, prefix: config.prefix, runId: run.runId, reportQueue, intervalMs: 100, timeoutMs: 50_000 });
  const ms = Date.now() - t0;
  return { run, meta, ms };
}

async function readSummary(dir: string): Promise<RunSummary> {
  return JSON.parse(await readFile(path.join(dir, REPORT_FILES.summaryJson), 'utf8')) as RunSummary;
}

function expectSummaryShape(s: RunSummary, runId: string): void {
  expect(s.runId).toBe(runId);
  expect(typeof s.backend).toBe('string');
  expect(s.backend).not.toBe('none');
  for (const k of ['fetchMs', 'routeMs', 'reportMs', 'totalMs'] as const) {
    expect(Number.isFinite(s.timings[k])).toBe(true);
    expect(s.timings[k]).toBeGreaterThanOrEqual(0);
  }
  expect(s.timings.totalMs).toBeGreaterThanOrEqual(s.timings.reportMs);
  for (const t of s.tickers) {
    expect(DOMAINS).toContain(t.domain);
    expect(t.probs).toHaveLength(4);
    expect(t.probs.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
    expect(t.confidence).toBeCloseTo(t.probs[DOMAINS.indexOf(t.domain)]!, 6);
    expect(t.days).toBeGreaterThan(0);
    expect(t.domainDays.reduce((a, b) => a + b, 0)).toBe(t.days);
  }
}

describe('pipeline end to end', () => {
  it('routes 12 simulated tickers into four PNGs and a summary', async () => {
    const picks = DOMAINS.flatMap((d) => DEFAULT_UNIVERSE.filter((u) => u.class === d).slice(0, 3).map((u) => u.ticker));
    expect(picks).toHaveLength(12);
    const { run, meta, ms } = await runToEnd({ tickers: picks, source: 'sim', range: { days: 60 }, seed: 3 });
    console.log(`e2e sim: 12 tickers × 60 days in ${ms} ms`);
    const timings = (await readSummary(meta.reportDir!)).timings;
    console.log(`e2e sim timings: ${JSON.stringify(timings)}`);

    expect(meta.status).toBe('finished');
    expect(meta.fetched).toBe(12);
    expect(meta.routed).toBe(12);
    const dir = meta.reportDir!;
    expect(dir).toBe(path.join(config.reportsDir, run.runId));
    for (const f of [REPORT_FILES.routing, REPORT_FILES.conditions, REPORT_FILES.timeSeries, REPORT_FILES.performance]) {
      await expectDrawnPng(path.join(dir, f));
    }
    expect(existsSync(path.join(dir, REPORT_FILES.summaryMd))).toBe(true);

    const s = await readSummary(dir);
    expectSummaryShape(s, run.runId);
    expect(s.source).toBe('sim');
    expect(s.failed).toEqual([]);
    expect(s.tickers.map((t) => t.ticker)).toEqual(picks);
    expect(s.tokens).toBe(12 * 60);
    expect(s.model.hidden).toBe(16);
    for (const t of s.tickers) {
      expect(t.days).toBe(60);
      expect(t.class).toBe(DEFAULT_UNIVERSE.find((u) => u.ticker === t.ticker)!.class);
    }
    // A reason for every route: up to three features, each with a positive effect, strongest first.
    for (const t of s.tickers) {
      expect(t.reasons!.length).toBeGreaterThan(0);
      expect(t.reasons!.length).toBeLessThanOrEqual(3);
      for (const r of t.reasons!) expect(r.effect).toBeGreaterThan(0);
      expect(t.reasons!.map((r) => r.effect)).toEqual([...t.reasons!.map((r) => r.effect)].sort((a, b) => b - a));
    }
    const md = await readFile(path.join(dir, REPORT_FILES.summaryMd), 'utf8');
    expect(md).toMatch(new RegExp(`^- ${s.tickers[0]!.ticker} → ${s.tickers[0]!.domain}: ${s.tickers[0]!.reasons![0]!.feature} [+−]\\d`, 'm'));
    // The run fetched the simulator's reference markets.
    expect(s.context).toEqual({ set: ['SPY', 'IEF', 'GLD', 'DBC', 'UUP'], missing: [] });
    // The run's blocks are gone once the report exists; its metadata stays (with a TTL) for dashboards.
    expect(await redis.exists(featureKey(config.prefix, run.runId, picks[0]!))).toBe(0);
    expect(await redis.ttl(runKey(config.prefix, run.runId))).toBeGreaterThan(0);
  });

  it('reports a ticker that has no data as failed with its reason and still finishes', async () => {
    const { run, meta } = await runToEnd({ tickers: ['SPY', 'NOSUCH1'], source: 'sim', range: { days: 30 } });
    expect(meta.status).toBe('finished');
    expect(meta.fetchFailed).toBe(1);
    const s = await readSummary(meta.reportDir!);
    expectSummaryShape(s, run.runId);
    expect(s.tickers.map((t) => t.ticker)).toEqual(['SPY']);
    expect(s.failed).toHaveLength(1);
    expect(s.failed[0]!.ticker).toBe('NOSUCH1');
    expect(s.failed[0]!.reason).toMatch(/^UNKNOWN_TICKER: /);
  });

  it('still writes a report when every ticker fails, and marks the run failed', async () => {
    const { run, meta } = await runToEnd({ tickers: ['NOSUCH2', 'NOSUCH3'], source: 'sim', range: { days: 30 } });
    expect(meta.status).toBe('failed');
    expect(meta.routed).toBe(0);
    const s = await readSummary(meta.reportDir!);
    expect(s.runId).toBe(run.runId);
    expect(s.tickers).toEqual([]);
    expect(s.failed.map((f) => f.ticker)).toEqual(['NOSUCH2', 'NOSUCH3']);
    await expectDrawnPng(path.join(meta.reportDir!, REPORT_FILES.routing));
  });

  describe.skipIf(!existsSync(MARKET_DATA))('csv source (needs ../shared/market-data)', () => {
    it('routes real CSV tickers and lists the one without a file', async () => {
      const tickers = ['AAPL', 'TLT', 'GLD', 'UVXY', 'NOFILE'];
      const { run, meta, ms } = await runToEnd({ tickers, source: 'csv', dataDir: MARKET_DATA, range: { days: 120 } });
      console.log(`e2e csv: 5 tickers × 120 days in ${ms} ms`);
      expect(meta.status).toBe('finished');
      const s = await readSummary(meta.reportDir!);
      expectSummaryShape(s, run.runId);
      expect(s.source).toBe('csv');
      expect(s.tickers.map((t) => t.ticker)).toEqual(['AAPL', 'TLT', 'GLD', 'UVXY']);
      expect(s.tickers.map((t) => t.class)).toEqual(['Equities', 'Fixed Income', 'Commodities', 'Derivatives']);
      expect(s.tickers.every((t) => t.days === 120 && t.lastDate === '2025-04-04')).toBe(true);
      expect(s.failed).toEqual([{ ticker: 'NOFILE', reason: expect.stringMatching(/^NO_DATA: .*NOFILE.*no such file/) }]);
      expect(s.context).toEqual({ set: ['SPY', 'IEF', 'GLD', 'DBC', 'UUP'], missing: [] });
    });

    it('routes a folder without the context series, and says which were missing', async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'moe-noctx-'));
      try {
        // SHY, not TLT: TLT stands in for IEF (scaled), so a folder holding it has a rates series.
        for (const t of ['AAPL', 'SHY']) await symlink(path.join(MARKET_DATA, `${t}.csv`), path.join(dir, `${t}.csv`));
        const { meta } = await runToEnd({ tickers: ['AAPL', 'SHY'], source: 'csv', dataDir: dir, range: { days: 60 } });
        expect(meta.status).toBe('finished');
        const s = await readSummary(meta.reportDir!);
        expect(s.tickers.map((t) => t.ticker)).toEqual(['AAPL', 'SHY']);
        expect(s.failed).toEqual([]);
        expect(s.context).toEqual({ set: ['SPY', 'IEF', 'GLD', 'DBC', 'UUP'], missing: ['DBC', 'GLD', 'IEF', 'SPY', 'UUP'] });
        expect(await readFile(path.join(meta.reportDir!, REPORT_FILES.summaryMd), 'utf8')).toMatch(/missing DBC, GLD, IEF, SPY, UUP/);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });
  if (!existsSync(MARKET_DATA)) {
    it.skip(`csv source: ${MARKET_DATA} is absent, so the CSV run is skipped`, () => undefined);
  }
});
