import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { FlowProducer, Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { benchTickers } from '../src/cli/bench-pipeline.js';
import { REPORT_FILES, type RunSummary } from '../src/report/types.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { jobIds } from '../jobs/keys.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import { initParams, saveModel } from '../src/router/model.js';
import { enqueueRun, type EnqueuedRun } from '../jobs/enqueue-run.js';
import { freePort } from './helpers/redis.js';

/**
 * Crash and restart safety with real processes and real Redis: workers are `npm run workers` processes, killed with
 * SIGKILL or stopped with SIGTERM; one test restarts a Redis server of its own (AOF on) in the middle of a run.
 * JOB_LOCK_MS is short so a dead worker's jobs go to another within seconds instead of the default 30 s.
 */

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const WORKERS = path.join(REPO, 'src/cli/workers.ts');
const TSX = import.meta.resolve('tsx');
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

interface WorkerProc {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  /** Resolves with the first log line whose msg is `msg` (also ones already seen). */
  waitFor(msg: string): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
}

const running: WorkerProc[] = [];

function startWorker(only: string, env: NodeJS.ProcessEnv, extra: string[] = []): Promise<WorkerProc> {
  const child = spawn(process.execPath, ['--import', TSX, WORKERS, '--only', only, ...extra], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const lines: Record<string, unknown>[] = [];
  const waiters: { msg: string; resolve: (l: Record<string, unknown>) => void }[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    lines.push(o);
    for (const w of waiters.filter((x) => x.msg === o.msg)) w.resolve(o);
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const proc: WorkerProc = {
    child,
    lines,
    exited,
    waitFor: (msg) => {
      const seen = lines.find((l) => l.msg === msg);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve) => waiters.push({ msg, resolve }));
    },
  };
  running.push(proc);
  return Promise.race([
    proc.waitFor('workers started').then(() => proc),
    exited.then((code) => Promise.reject(new Error(`${only} worker exited with ${code} before starting: ${stderr}`))),
  ]);
}

async function kill(p: WorkerProc, signal: NodeJS.Signals): Promise<number | null> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
  return p.exited;
}

afterEach(async () => {
  await Promise.all(running.splice(0).map((p) => kill(p, 'SIGKILL')));
});

/** A test's world: its own prefix, connections and clean-up. */
async function world(redisUrl = 'redis://127.0.0.1:6379') {
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
    enqueue: (tickers: string[]) => enqueueRun({ flow, redis, prefix, runTtlSeconds: 600 }, { tickers, source: 'sim', range: { days: 20 }, seed: 3 }),
    /** Waits for the run's report job and returns its summary.json. */
    async finished(run: EnqueuedRun): Promise<RunSummary> {
      const q = queue(QUEUE_NAMES.report);
      const job = await q.getJob(run.reportJobId);
      await q.close();
      if (job === undefined) throw new Error('report job missing');
      const result = (await job.waitUntilFinished(events, 120_000)) as { reportDir: string };
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

describe('crash safety with real worker processes', () => {
  it('finishes the run with every ticker once after kill -9 of a fetch worker in the middle of the fetch stage', async () => {
    const w = await world();
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
    const w = await world();
    try {
      await startWorker('fetch,report', w.env, ['--threads', '1']);
      const routeA = await startWorker('route', w.env);
      const tickers = benchTickers(400);
      const run = await w.enqueue(tickers);
      // The route worker logs `routing started` before touching the job's data; freeze it there.
      await routeA.waitFor('routing started');
      routeA.child.kill('SIGSTOP');
      const routeQ = w.queue(QUEUE_NAMES.route);
      expect(await (await routeQ.getJob(jobIds.route(run.runId)))!.getState()).toBe('active');
      await kill(routeA, 'SIGKILL');

      const routeB = await startWorker('route', w.env);
      const summary = await w.finished(run);
      expectEveryTickerOnce(summary, tickers);
      const routeJob = (await routeQ.getJob(jobIds.route(run.runId)))!;
      expect(routeJob.processedBy).toContain(`:${routeB.child.pid}:route`);
      await routeQ.close();
    } finally {
      await w.close();
    }
  });

  it('stops on SIGTERM within the shutdown time-out, hands the active job back, and exits 0', async () => {
    const w = await world();
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


describe.skipIf(!haveRedisServer)('Redis restart', () => {
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
    const w = await world(`redis://127.0.0.1:${port}`);
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
