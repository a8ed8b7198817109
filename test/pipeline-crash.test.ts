import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { FlowProducer, Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { benchTickers } from '../src/cli/bench-pipeline.js';
import { REPORT_FILES, type RunSummary } from '../src/report/types.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { jobIds, runKey } from '../jobs/keys.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import { initParams, saveModel } from '../src/router/model.js';
import { enqueueRun, type EnqueuedRun } from '../jobs/enqueue-run.js';
import { freePort } from './helpers/redis.js';
import { startWorkerProcess, type WorkerProc } from './helpers/worker-process.js';

/**
 * Crash and restart safety with real processes and real Redis: workers are `npm run workers` processes, killed with
 * SIGKILL or stopped with SIGTERM; one test restarts a Redis server of its own (AOF on) in the middle of a run.
 * JOB_LOCK_MS is short so a dead worker's jobs go to another within seconds instead of the default 30 s.
 */

const haveRedisServer = spawnSync('redis-server', ['--version']).status === 0;
if (!haveRedisServer) console.warn('pipeline-crash: Redis restart test skipped, no redis-server binary on PATH');

let tmp: string;
let modelPath: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-crash-'));
  modelPath = path.join(tmp, 'router.safetensors');
  await saveModel(modelPath, { hidden: 16, params: initParams(16, 5), temperature: 1 });
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const running: WorkerProc[] = [];

const startWorker = (only: string, env: NodeJS.ProcessEnv, extra: string[] = []): Promise<WorkerProc> => startWorkerProcess(only, env, running, extra);

async function kill(p: WorkerProc, signal: NodeJS.Signals): Promise<number | null> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
  return p.exited;
}

afterEach(async () => {
  await Promise.all(running.splice(0).map((p) => kill(p, 'SIGKILL')));
});

/**
 * Every case runs twice: on a run of one shard (the default shard size) and on a run cut into four shards, whose
 * route jobs each wait for their own fetch jobs only.
 */
const SHARDINGS = [1, 4] as const;

/** A test's world: its own prefix, connections and clean-up; its runs are cut into `shards` shards. */
async function world(shards: number, redisUrl = 'redis://127.0.0.1:6379') {
  const prefix = `t-crash-${randomUUID().slice(0, 8)}`;
  const reportsDir = path.join(tmp, prefix);
  const redis = createRedis(redisUrl, { role: 'worker' });
  const flow = new FlowProducer({ connection: redis, prefix });
  const eventsConn = createRedis(redisUrl, { role: 'worker' });
  const events = new QueueEvents(QUEUE_NAMES.report, { connection: eventsConn, prefix });
  await events.waitUntilReady();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    REDIS_URL: redisUrl,
    MOE_PREFIX: prefix,
    MOE_MODEL: modelPath,
    REPORTS_DIR: reportsDir,
    LOG_LEVEL: 'info',
    JOB_LOCK_MS: '2000',
    FEATURE_TTL_SECONDS: '600',
    RUN_TTL_SECONDS: '600',
  };
  const queue = (name: string) => new Queue(name, { connection: redis, prefix });
  return {
    prefix,
    redis,
    env,
    queue,
    async enqueue(tickers: string[]): Promise<EnqueuedRun> {
      const shardSize = Math.ceil(tickers.length / shards);
      const run = await enqueueRun({ flow, redis, prefix, runTtlSeconds: 600, shardSize }, { tickers, source: 'sim', range: { days: 20 }, seed: 3 });
      expect(run.shards).toBe(shards);
      return run;
    },
    /** Waits for the run's report job and returns its summary.json. */
    async finished(run: EnqueuedRun): Promise<RunSummary> {
      const q = queue(QUEUE_NAMES.report);
      const job = await q.getJob(run.reportJobId);
      await q.close();
      if (job === undefined) throw new Error('report job missing');
      const result = (await job.waitUntilFinished(events, 120_000)) as { reportDir: string };
      // Each shard counted once, however often its route job was started.
      expect(await redis.hmget(runKey(prefix, run.runId), 'shards', 'shardsRouted')).toEqual([String(shards), String(shards)]);
      return JSON.parse(await readFile(path.join(result.reportDir, REPORT_FILES.summaryJson), 'utf8')) as RunSummary;
    },
    async close() {
      await events.close();
      for (const name of Object.values(QUEUE_NAMES)) {
        const q = queue(name);
        await q.obliterate({ force: true }).catch(() => undefined);
        await q.close();
      }
      for await (const keys of redis.scanStream({ match: `${prefix}:*`, count: 500 })) {
        if ((keys as string[]).length > 0) await redis.del(...(keys as string[]));
      }
      await flow.close();
      await Promise.all([closeRedis(redis), closeRedis(eventsConn)]);
    },
  };
}

/** Every ticker of the run exactly once in summary.json, all of them routed. */
function expectEveryTickerOnce(s: RunSummary, tickers: string[]): void {
  expect(s.failed).toEqual([]);
  const seen = s.tickers.map((t) => t.ticker);
  expect(seen).toHaveLength(tickers.length);
  expect(new Set(seen).size).toBe(seen.length);
  expect([...seen].sort()).toEqual([...tickers].sort());
}

/** Resolves once the fetch stage has completed `n` jobs of the run. */
async function fetchedAtLeast(redis: Redis, prefix: string, runId: string, n: number): Promise<void> {
  for (;;) {
    const done = Number((await redis.hget(`${prefix}:run:${runId}`, 'fetched')) ?? 0);
    if (done >= n) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.each(SHARDINGS)('crash safety with real worker processes (%i shard run)', (shards) => {
  it('finishes the run with every ticker once after kill -9 of a fetch worker in the middle of the fetch stage', async () => {
    const w = await world(shards);
    try {
      const fetchA = await startWorker('fetch', w.env, ['--concurrency', '4', '--threads', '1']);
      await startWorker('route,report', w.env);
      const tickers = benchTickers(240);
      const run = await w.enqueue(tickers);
      await fetchedAtLeast(w.redis, w.prefix, run.runId, 20);
      // Freeze first, so the jobs it holds are still active when we look; then kill it for good.
      fetchA.child.kill('SIGSTOP');
      const fetchQ = w.queue(QUEUE_NAMES.fetch);
      const held = (await fetchQ.getJobs(['active'], 0, -1)).map((j) => j.id!);
      expect(held.length).toBeGreaterThan(0);
      await kill(fetchA, 'SIGKILL');

      const fetchB = await startWorker('fetch', w.env, ['--concurrency', '4', '--threads', '1']);
      const summary = await w.finished(run);
      expectEveryTickerOnce(summary, tickers);
      // The jobs the dead worker held were finished by the new one.
      const bName = `:${fetchB.child.pid}:fetch`;
      for (const id of held) {
        const job = await fetchQ.getJob(id);
        expect(job?.finishedOn, id).toBeGreaterThan(0);
        expect(job?.processedBy, id).toContain(bName);
      }
      await fetchQ.close();
    } finally {
      await w.close();
    }
  });

  it('finishes the run with every ticker once after kill -9 of the route worker while it routes', async () => {
    const w = await world(shards);
    try {
      await startWorker('fetch,report', w.env, ['--threads', '1']);
      const routeA = await startWorker('route', w.env);
      const tickers = benchTickers(400);
      const run = await w.enqueue(tickers);
      // The route worker logs `routing started` before touching the job's data; freeze it there.
      const started = await routeA.waitFor('routing started');
      routeA.child.kill('SIGSTOP');
      const routeQ = w.queue(QUEUE_NAMES.route);
      // Of a sharded run, the first shard whose fetch jobs are done: the others still fetch or wait to be routed.
      const heldId = String(started.jobId);
      expect(heldId).toBe(jobIds.route(run.runId, Number(started.shard)));
      expect(await (await routeQ.getJob(heldId))!.getState()).toBe('active');
      await kill(routeA, 'SIGKILL');

      const routeB = await startWorker('route', w.env);
      const summary = await w.finished(run);
      expectEveryTickerOnce(summary, tickers);
      const routeJob = (await routeQ.getJob(heldId))!;
      expect(routeJob.processedBy).toContain(`:${routeB.child.pid}:route`);
      await routeQ.close();
    } finally {
      await w.close();
    }
  });

  it('stops on SIGTERM within the shutdown time-out, hands the active job back, and exits 0', async () => {
    const w = await world(shards);
    try {
      await startWorker('fetch,route', w.env, ['--threads', '1']);
      const reportA = await startWorker('report', { ...w.env, SHUTDOWN_TIMEOUT_MS: '200' });
      const tickers = benchTickers(60);
      const run = await w.enqueue(tickers);
      const reportEvents = new QueueEvents(QUEUE_NAMES.report, { connection: createRedis('redis://127.0.0.1:6379', { role: 'worker' }), prefix: w.prefix });
      await reportEvents.waitUntilReady();
      // Rendering four figures in a fresh process takes well over 200 ms: the job is still active at the time-out.
      await new Promise<void>((resolve) => reportEvents.on('active', ({ jobId }) => jobId === run.reportJobId && resolve()));
      const t0 = Date.now();
      expect(await kill(reportA, 'SIGTERM')).toBe(0);
      const stopMs = Date.now() - t0;
      const msgs = reportA.lines.map((l) => l.msg);
      expect(msgs).toContain('shutdown time-out: handing active jobs back to their queues');
      expect(msgs).toContain('handed back to the queue at shutdown');
      expect(msgs.at(-1)).toBe('stopped');
      // The time-out, plus closing pools and Redis; far below the default 30 s lock a stalled job would wait out.
      expect(stopMs).toBeLessThan(10_000);
      const reportQ = w.queue(QUEUE_NAMES.report);
      expect(await (await reportQ.getJob(run.reportJobId))!.getState()).toBe('waiting');
      await reportQ.close();

      await startWorker('report', w.env);
      expectEveryTickerOnce(await w.finished(run), tickers);
      await reportEvents.close();
    } finally {
      await w.close();
    }
  });
});


describe.skipIf(!haveRedisServer).each(SHARDINGS)('Redis restart (%i shard run)', (shards) => {
  it('finishes a run when its Redis (AOF on) restarts in the middle of the fetch stage', async () => {
    const port = await freePort();
    const dir = await mkdtemp(path.join(tmp, 'redis-'));
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--maxmemory-policy', 'noeviction'];
    const startRedis = async (): Promise<ChildProcess> => {
      const p = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve, reject) => {
        createInterface({ input: p.stdout! }).on('line', (l) => l.includes('Ready to accept connections') && resolve());
        p.once('exit', (code) => reject(new Error(`redis-server exited with ${code}`)));
      });
      return p;
    };
    let server = await startRedis();
    const w = await world(shards, `redis://127.0.0.1:${port}`);
    try {
      await startWorker('fetch', w.env, ['--concurrency', '2', '--threads', '1']);
      await startWorker('route,report', w.env);
      const tickers = benchTickers(200);
      const run = await w.enqueue(tickers);
      await fetchedAtLeast(w.redis, w.prefix, run.runId, 20);
      // SIGTERM: Redis' own shutdown (AOF flushed); everything connected sees the connection drop.
      await new Promise<void>((resolve) => {
        server.once('exit', () => resolve());
        server.kill('SIGTERM');
      });
      server = await startRedis();
      expectEveryTickerOnce(await w.finished(run), tickers);
    } finally {
      await w.close();
      await Promise.all(running.splice(0).map((p) => kill(p, 'SIGKILL')));
      await new Promise<void>((resolve) => {
        if (server.exitCode !== null) return resolve();
        server.once('exit', () => resolve());
        server.kill('SIGTERM');
      });
    }
  });
});
