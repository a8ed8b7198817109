import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue, type Job } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { benchTickers } from '../src/cli/bench-pipeline.js';
import { initParams, saveModel } from '../src/router/model.js';
import { REPORT_FILES, type RunSummary } from '../src/report/types.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import { readRunMeta } from '../jobs/run-meta.js';
import { clearPrefix } from './helpers/redis.js';
import { processedByTag, startWorkerProcess, stopWorkerProcess, type WorkerProc } from './helpers/worker-process.js';

/**
 * A fleet on one Redis: two route, three fetch and one report worker process, and a run of 300 simulated tickers
 * enqueued by the enqueue CLI with MOE_SHARD_SIZE=50. Every ticker is fetched once and routed once, whichever process
 * took its jobs; when the run has several route jobs, both route processes take some.
 */

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ENQUEUE_CLI = path.join(REPO, 'src/cli/enqueue.ts');
const TSX = import.meta.resolve('tsx');
const REDIS_URL = 'redis://127.0.0.1:6379';
const TICKERS = 300;

let tmp: string;
let modelPath: string;
const prefix = `t-multi-${randomUUID().slice(0, 8)}`;
const running: WorkerProc[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-multi-'));
  modelPath = path.join(tmp, 'router.safetensors');
  await saveModel(modelPath, { hidden: 16, params: initParams(16, 13), temperature: 1 });
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((p) => stopWorkerProcess(p, 'SIGKILL')));
});

afterAll(async () => {
  const redis = createRedis(REDIS_URL);
  await clearPrefix(redis, prefix);
  await closeRedis(redis);
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** Runs `npm run enqueue -- --tickers-file - …` with the tickers on stdin until the run ends; returns its output. */
function enqueueCli(tickers: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, ['--import', TSX, ENQUEUE_CLI, '--tickers-file', '-', '--source', 'sim', '--days', '30', '--seed', '3', '--timeout', '100'], {
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  child.stdin.end(tickers.join('\n'));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, out })));
}

/** How many tickers a route job's result says it routed (a shard's count, or the list of a whole-run job). */
function routedBy(job: Job): number {
  const r = job.returnvalue as { routed?: unknown; tickers?: unknown };
  return Array.isArray(r.tickers) ? r.tickers.length : Number(r.routed);
}

describe('several worker processes of each stage on one Redis', () => {
  it('routes every ticker of a 300-ticker run exactly once, with the work spread over the processes', async () => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      REDIS_URL,
      REDIS_CLUSTER_NODES: '',
      MOE_PREFIX: prefix,
      MOE_MODEL: modelPath,
      REPORTS_DIR: path.join(tmp, 'reports'),
      LOG_LEVEL: 'info',
      FEATURE_TTL_SECONDS: '600',
      RUN_TTL_SECONDS: '600',
      MOE_SHARD_SIZE: '50',
    };
    const t0 = Date.now();
    const started = await Promise.all([
      startWorkerProcess('route', env, running),
      startWorkerProcess('route', env, running),
      ...[0, 1, 2].map(() => startWorkerProcess('fetch', env, running, ['--concurrency', '4', '--threads', '1'])),
      startWorkerProcess('report', env, running, ['--threads', '1']),
    ]);
    const routeProcs = started.slice(0, 2);
    const fetchProcs = started.slice(2, 5);
    const t1 = Date.now();

    const tickers = benchTickers(TICKERS);
    const { code, out } = await enqueueCli(tickers, env);
    expect(code, out).toBe(0);
    const runId = /^run ([0-9a-f-]{36}):/m.exec(out)?.[1];
    expect(runId, out).toBeDefined();
    const t2 = Date.now();
    console.log(`multi-process: 6 worker processes up in ${t1 - t0} ms; ${TICKERS} tickers × 30 days routed and reported in ${t2 - t1} ms`);

    const redis = createRedis(REDIS_URL);
    const routeQ = new Queue(QUEUE_NAMES.route, { connection: redis, prefix });
    const fetchQ = new Queue(QUEUE_NAMES.fetch, { connection: redis, prefix });
    try {
      const meta = (await readRunMeta(redis, prefix, runId!))!;
      expect(meta.status).toBe('finished');
      expect(meta.fetched).toBe(TICKERS);
      expect(meta.routed).toBe(TICKERS);

      // The summary: each ticker once, none failed.
      const s = JSON.parse(await readFile(path.join(meta.reportDir!, REPORT_FILES.summaryJson), 'utf8')) as RunSummary;
      expect(s.failed).toEqual([]);
      expect(s.tickers.map((t) => t.ticker)).toEqual(tickers);

      // The route stage: the run's route jobs cover every ticker exactly once, each job ran once and completed.
      const routeJobs = (await routeQ.getJobs(['completed', 'failed', 'active', 'waiting', 'delayed', 'waiting-children'], 0, -1)).filter(
        (j) => (j.data as { runId?: string }).runId === runId,
      );
      expect(routeJobs.length).toBeGreaterThan(0);
      const routedTimes = new Map<string, number>();
      for (const job of routeJobs) {
        expect(job.finishedOn, job.id).toBeGreaterThan(0);
        expect(job.failedReason, job.id).toBeUndefined();
        expect(job.attemptsStarted, job.id).toBe(1);
        for (const t of (job.data as { tickers: string[] }).tickers) routedTimes.set(t, (routedTimes.get(t) ?? 0) + 1);
      }
      expect([...routedTimes.keys()].sort()).toEqual([...tickers].sort());
      expect([...routedTimes.values()].every((n) => n === 1)).toBe(true);
      expect(routeJobs.reduce((n, j) => n + routedBy(j), 0)).toBe(TICKERS);
      for (const p of routeProcs) expect(p.lines.filter((l) => l.msg === 'job stalled')).toEqual([]);

      // The fetch stage: one completed job per ticker, each started once, spread over the three processes.
      const fetchJobs = (await fetchQ.getJobs(['completed'], 0, -1)).filter((j) => (j.data as { runId?: string }).runId === runId);
      expect(fetchJobs.map((j) => (j.data as { ticker: string }).ticker).sort()).toEqual([...tickers].sort());
      expect(fetchJobs.every((j) => j.attemptsStarted === 1)).toBe(true);
      for (const p of fetchProcs) expect(fetchJobs.some((j) => j.processedBy?.includes(processedByTag(p, 'fetch'))), `fetch pid ${p.child.pid}`).toBe(true);

      const byRouteProc = routeProcs.map((p) => routeJobs.filter((j) => j.processedBy?.includes(processedByTag(p, 'route'))).length);
      console.log(`multi-process: ${routeJobs.length} route job(s), per route process ${JSON.stringify(byRouteProc)}`);
      expect(byRouteProc.reduce((a, b) => a + b, 0)).toBe(routeJobs.length);
      // Several route jobs (a sharded run): both route processes took some.
      if (routeJobs.length > 1) expect(byRouteProc.every((n) => n > 0), JSON.stringify(byRouteProc)).toBe(true);
    } finally {
      await Promise.allSettled([routeQ.close(), fetchQ.close()]);
      await closeRedis(redis);
    }
  });
});
