import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { FlowProducer, Queue, QueueEvents, Worker } from 'bullmq';
import { hashTaggedPrefix, loadConfig } from '../config.js';
import { simTicker, SUBTYPE_CODE, type Subtype } from '../data/universe.js';
import { closeRedis, connectClient, createRedis, deleteMatching, type RedisClient, type RedisTarget } from '../../jobs/connection.js';
import { bullJobKey, jobIds, prefixPattern } from '../../jobs/keys.js';
import { QUEUE_NAMES, ROLES, type Role } from '../../jobs/queues.js';
import { enqueueRun, shardPlan } from '../../jobs/enqueue-run.js';
import { FETCH_JOB_OPTIONS, REPORT_JOB_OPTIONS, ROUTE_JOB_OPTIONS } from '../../jobs/job-options.js';
import { MAX_DAYS, MAX_TICKERS } from '../limits.js';
import { errorText } from '../util/errors.js';
import { CODE_BUCKETS, codeShares, profileBuckets, type CpuProfile } from '../util/cpu-profile.js';
import { defaultFeatureThreads } from '../../workers/pool.js';
import { intFlag, parseArgs, stringFlag, UsageError } from './args.js';
import { CommandError, EXIT, runCommand, runIfMain } from './run.js';

export const BENCH_PIPELINE_USAGE = `Usage: npm run bench:pipeline -- --tickers N [--days D] [--runs R] [--fetch-procs P] [--route-procs P]
         [--report-procs P] [--sweep-fetch-procs LIST] [--json]

Times whole runs of N simulated tickers × D days (fetch → route → report, four PNGs and the summaries) with the
workers in separate processes, next to a bare BullMQ flow of the same shape (report ← one route job per shard ←
the shard's fetch jobs, processors that do nothing) on the same Redis, in the same invocation. Reports time to the final report, tickers/s,
Redis peak memory (above the level before the run), each worker process's peak RSS and the CPU seconds of every
process (workers, the Redis server, this process) and the orchestration CPU of both flows per ticker: Redis, the
main thread of every worker process (BullMQ, ioredis, the processors' JavaScript) and this process (FlowProducer,
QueueEvents), with the ratio of the real flow's to the bare flow's, and the last run's tail: when its last fetch job
completed, its last route job ran and its report job ran (the jobs' own timestamps, in ms from the enqueue call),
with the report job's phases from its log. The real workers first do one warm-up run of 20
tickers (their thread pools start lazily), then the timed runs. Every fetch process runs with MOE_HOST_PROCS set to
the number of fetch processes, so together they take about one feature thread per CPU.

Options:
  --tickers N       tickers per run, 1..${MAX_TICKERS} (required)
  --days D          routed days per ticker (default 60)
  --runs R          consecutive runs of the real pipeline on the same workers (default 1); with R > 1 the worker
                    RSS after every run is reported, to see whether memory grows from run to run
  --fetch-procs P   fetch worker processes (default 1)
  --route-procs P   route worker processes, one router each (default 1)
  --report-procs P  report worker processes (default 1)
  --sweep-fetch-procs LIST
                    comma-separated fetch process counts (e.g. 1,2,4,8,12): one real run series per count, no bare
                    flow, one row each with wall time, tickers/s, fetch-stage time, CPU seconds of all processes and
                    the efficiency against one process (tickers/s per fetch process relative to the count 1, or to
                    the first count when 1 is not listed)
  --cpu-prof DIR    write a V8 CPU profile of every worker process into DIR (open in Chrome DevTools)
  --attribute       profile every worker process (into --cpu-prof DIR, or a temporary folder) and also report the
                    orchestration the way it is defined: Redis, the share of each worker main thread's CPU that its
                    profile puts in BullMQ and ioredis over the timed runs, and this process; with each real main
                    thread's split (BullMQ, ioredis, piscina, the project's code, Node); profiling slows every thread
  --threads         also print each real worker process's CPU seconds per thread (user + system), to see the
                    time a JS profile does not show: GC, zlib, libvips and cairo threads, page faults
  --json            print one JSON object on the last line
  --help            this text

Uses REDIS_URL, MOE_MODEL and MOE_SHARD_SIZE (tickers per shard); every key lives under a fresh prefix that is
removed at the end.`;

const FLAGS = {
  tickers: { type: 'string' },
  days: { type: 'string' },
  runs: { type: 'string' },
  'fetch-procs': { type: 'string' },
  'route-procs': { type: 'string' },
  'report-procs': { type: 'string' },
  'sweep-fetch-procs': { type: 'string' },
  json: { type: 'boolean' },
  'cpu-prof': { type: 'string' },
  attribute: { type: 'boolean' },
  threads: { type: 'boolean' },
  help: { type: 'boolean' },
  // Internal: this file is also the bare worker process.
  'bare-worker': { type: 'string' },
} as const;

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TSX = import.meta.resolve('tsx');
const SELF = fileURLToPath(import.meta.url);
const WORKERS_CLI = path.join(REPO, 'src/cli/workers.ts');

/** Jobs at once per stage, the same for the bare and the real workers so the two differ only in the work. */
const CONCURRENCY: Record<Role, number> = { fetch: 16, route: 1, report: 1 };

/** N distinct simulated tickers spread over every sub-type (and so over the four domains). */
export function benchTickers(n: number): string[] {
  const subtypes = Object.keys(SUBTYPE_CODE) as Subtype[];
  return Array.from({ length: n }, (_, i) => simTicker(subtypes[i % subtypes.length]!, Math.floor(i / subtypes.length)));
}

interface Proc {
  role: string;
  child: ChildProcess;
  peakRssKb: number;
  stderr: string;
  /** The newest `report written` log line of a report worker (its phases), for the tail timeline. */
  reportLog?: string;
}

function rssKb(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0; // the process has exited, or this is not Linux: no reading rather than a wrong one
  }
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ: 100 on every Linux build Node targets). */
const CLK_TCK = 100;

/** CPU seconds (user + system, all threads) a process has used so far; NaN where /proc cannot tell. */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime are fields 14 and 15.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return Number.NaN;
  }
}

export interface ThreadCpu {
  name: string;
  user: number;
  system: number;
  /** Minor page faults: each first touch of freshly mapped memory (large buffers) costs system time. */
  faults: number;
}

/** User and system CPU seconds of each live thread of a process, by thread id, with the thread's name. */
export function threadCpu(pid: number | undefined): Map<number, ThreadCpu> {
  const out = new Map<number, ThreadCpu>();
  if (pid === undefined) return out;
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out; // exited, or not Linux
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(tid), { name, user: Number(f[11]) / CLK_TCK, system: Number(f[12]) / CLK_TCK, faults: Number(f[7]) });
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return out;
}

/**
 * Per-thread CPU between two `threadCpu` readings of one process: threads that used at least 0.05 s, busiest
 * first, and the rest of the process's time (threads that ended in between and the small ones) as `other`.
 */
function threadCpuUsed(
  before: ReturnType<typeof threadCpu>,
  after: ReturnType<typeof threadCpu>,
  processSeconds: number,
): string {
  const rows = [...after].map(([tid, a]) => {
    const b = before.get(tid);
    return { tid, name: a.name, user: a.user - (b?.user ?? 0), system: a.system - (b?.system ?? 0), faults: a.faults - (b?.faults ?? 0) };
  });
  const shown = rows.filter((r) => r.user + r.system >= 0.05).sort((x, y) => y.user + y.system - (x.user + x.system));
  const other = processSeconds - shown.reduce((a, r) => a + r.user + r.system, 0);
  const faults = rows.reduce((a, r) => a + r.faults, 0);
  return [
    ...shown.map((r) => `${r.name}[${r.tid}] ${r.user.toFixed(2)}u+${r.system.toFixed(2)}s`),
    `other ${other.toFixed(2)}`,
    `minor faults (live threads) ${faults}`,
  ].join(', ');
}

/**
 * CPU seconds the Redis server has used (user + system, every thread of it), from its own `INFO cpu`, so a server on
 * another machine counts too; NaN when the reply does not say. On a cluster: the node the client asks.
 */
async function redisCpuSeconds(redis: RedisClient): Promise<number> {
  const info = await redis.info('cpu');
  const user = /used_cpu_user:([\d.]+)/.exec(info);
  const sys = /used_cpu_sys:([\d.]+)/.exec(info);
  return user && sys ? Number(user[1]) + Number(sys[1]) : Number.NaN;
}

/** CPU seconds of a process's main thread (its JavaScript: BullMQ, ioredis, the processor), NaN when gone. */
function mainThreadSeconds(pid: number | undefined): number {
  const t = pid === undefined ? undefined : threadCpu(pid).get(pid);
  return t === undefined ? Number.NaN : t.user + t.system;
}

/** CPU seconds so far of each worker process and its main thread, the Redis server and this process. */
interface CpuSnapshot {
  procs: number[];
  main: number[];
  redis: number;
  bench: number;
}

async function cpuSnapshot(procs: Proc[], redis: RedisClient): Promise<CpuSnapshot> {
  const own = process.cpuUsage();
  return {
    procs: procs.map((p) => cpuSeconds(p.child.pid)),
    main: procs.map((p) => mainThreadSeconds(p.child.pid)),
    redis: await redisCpuSeconds(redis),
    bench: (own.user + own.system) / 1e6,
  };
}

const round2 = (v: number) => Math.round(v * 100) / 100;

/** Label of a worker process: its role, with its index among all processes when the role has several. */
function procLabel(procs: Proc[], i: number): string {
  const role = procs[i]!.role;
  return `${role}${procs.filter((q) => q.role === role).length > 1 ? i : ''}`;
}

function cpuUsed(procs: Proc[], before: CpuSnapshot, after: CpuSnapshot, runs: number): Record<string, number> {
  const out: Record<string, number> = {};
  const put = (label: string, v: number) => {
    if (Number.isFinite(v)) out[label] = round2(v / runs);
  };
  procs.forEach((_, i) => put(procLabel(procs, i), after.procs[i]! - before.procs[i]!));
  put('redis', after.redis - before.redis);
  put('bench', after.bench - before.bench);
  return out;
}

/**
 * The flow's orchestration CPU per run: what moves jobs rather than computes features, routes or draws. Redis, the
 * main thread of every worker process and this process (FlowProducer, QueueEvents). The bare flow spends nothing
 * else; in the real flow the worker main threads also run the processors' own JavaScript (payload checks, storing a
 * feature block, the route worker's aggregation, the report's merge), so its figure is an upper bound on BullMQ and
 * ioredis. Feature, render, router and V8 helper threads are left out of both.
 */
export interface Orchestration {
  cpuSeconds: number;
  msPerTicker: number;
  /** Redis, the worker processes' main threads together, this process. */
  parts: { redis: number; workerMain: number; bench: number };
}

function orchestration(before: CpuSnapshot, after: CpuSnapshot, runs: number, tickers: number): Orchestration {
  const redis = (after.redis - before.redis) / runs;
  const workerMain = after.main.reduce((acc, v, i) => acc + (v - before.main[i]!), 0) / runs;
  const bench = (after.bench - before.bench) / runs;
  const total = redis + workerMain + bench;
  return {
    cpuSeconds: round2(total),
    msPerTicker: Math.round((total / tickers) * 1e6) / 1e3,
    parts: { redis: round2(redis), workerMain: round2(workerMain), bench: round2(bench) },
  };
}

/** Node flags for the worker processes (profiling); set by each call of main. */
let workerNodeArgs: string[] = [];

/** Starts a process and resolves once it prints a line containing `ready` (JSON logs or the bare worker's line). */
async function startProc(role: string, args: string[], env: NodeJS.ProcessEnv, ready: string): Promise<Proc> {
  const child = spawn(process.execPath, [...workerNodeArgs, '--import', TSX, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const proc: Proc = { role, child, peakRssKb: 0, stderr: '' };
  child.stderr!.on('data', (d: Buffer) => (proc.stderr = (proc.stderr + d.toString()).slice(-4000)));
  await new Promise<void>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      if (line.includes(ready)) resolve();
      if (line.includes('"report written"')) proc.reportLog = line;
    });
    child.once('exit', (code) => reject(new Error(`${role} worker exited with ${code} before it was ready: ${proc.stderr}`)));
  });
  return proc;
}

async function stopProcs(procs: Proc[]): Promise<void> {
  await Promise.all(
    procs.map(
      (p) =>
        new Promise<void>((resolve) => {
          if (p.child.exitCode !== null || p.child.signalCode !== null) return resolve();
          p.child.once('exit', () => resolve());
          p.child.kill('SIGTERM');
        }),
    ),
  );
}

/** Samples worker RSS and Redis memory every 100 ms until stopped. */
function startSampler(redis: RedisClient, procs: Proc[]) {
  let redisPeak = 0;
  let busy = false;
  const sample = async () => {
    if (busy) return;
    busy = true;
    try {
      for (const p of procs) p.peakRssKb = Math.max(p.peakRssKb, rssKb(p.child.pid));
      const info = await redis.info('memory');
      const m = /used_memory:(\d+)/.exec(info);
      if (m) redisPeak = Math.max(redisPeak, Number(m[1]));
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void sample(), 100);
  return {
    sample,
    stop: async () => {
      clearInterval(timer);
      await sample();
      return redisPeak;
    },
  };
}

async function redisUsedMemory(redis: RedisClient): Promise<number> {
  const m = /used_memory:(\d+)/.exec(await redis.info('memory'));
  return m ? Number(m[1]) : 0;
}

async function removePrefix(redis: RedisClient, prefix: string): Promise<void> {
  for (const name of Object.values(QUEUE_NAMES)) {
    const q = new Queue(name, { connection: redis, prefix });
    await q.obliterate({ force: true }).catch(() => undefined);
    await q.close();
  }
  await deleteMatching(redis, prefixPattern(prefix));
}

/** The bare worker process: processors that return at once, with the real stages' concurrency. */
async function bareWorker(role: Role): Promise<void> {
  const config = loadConfig();
  const redis = createRedis(config, { role: 'worker', name: `moe-bench-bare:${role}` });
  const w = new Worker(QUEUE_NAMES[role], async () => ({ ok: true }), { connection: redis, prefix: config.prefix, concurrency: CONCURRENCY[role] });
  await w.waitUntilReady();
  console.log(`bare ${role} ready`);
  await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
  await w.close();
  await closeRedis(redis);
}

/**
 * When the last run's stages ended, in ms from its enqueue call: the enqueue's return, the last fetch job's
 * completion, the last route job's start and end, the report job's start and end (BullMQ's `processedOn` and
 * `finishedOn`), and when this process saw the report finish. `phases` is the report job's own split, from its log.
 */
export interface Tail {
  enqueued: number;
  lastFetchDone: number;
  lastRouteStart: number;
  lastRouteDone: number;
  reportStart: number;
  reportDone: number;
  seen: number;
  /** seen − lastFetchDone: what remains once the fetch stage is over. */
  afterFetch: number;
  phases?: Record<string, number>;
  /** Shards the report worker had merged before the report job started (its shard prefetch). */
  shardsAhead?: number;
}

/** A timed run: its jobs, and when (epoch ms) it was enqueued, the enqueue returned and its report was seen done. */
interface TimedRun {
  runId: string;
  tickers: string[];
  shards: number;
  reportJobId: string;
  t0: number;
  enqueued: number;
  seen: number;
}

/** Reads the run's job timestamps (fetch jobs kept by their retention: the last ones to finish are). */
async function tailTimeline(redis: RedisClient, prefix: string, run: TimedRun, reportLog: string | undefined): Promise<Tail> {
  const { t0, enqueued, seen } = run;
  const pipe = redis.pipeline();
  for (const t of run.tickers) pipe.hget(bullJobKey(prefix, QUEUE_NAMES.fetch, jobIds.fetch(run.runId, t)), 'finishedOn');
  for (let s = 0; s < run.shards; s++) pipe.hmget(bullJobKey(prefix, QUEUE_NAMES.route, jobIds.route(run.runId, s)), 'processedOn', 'finishedOn');
  pipe.hmget(bullJobKey(prefix, QUEUE_NAMES.report, run.reportJobId), 'processedOn', 'finishedOn');
  const replies = ((await pipe.exec()) ?? []).map(([, v]) => v);
  const num = (v: unknown) => (v === null || v === undefined ? Number.NaN : Number(v) - t0);
  const max = (xs: number[]) => xs.reduce((a, b) => (Number.isFinite(b) && !(b <= a) ? b : a), Number.NaN);
  const fetchDone = replies.slice(0, run.tickers.length).map(num);
  const routes = replies.slice(run.tickers.length, run.tickers.length + run.shards) as (string | null)[][];
  const report = replies[replies.length - 1] as (string | null)[];
  const lastFetchDone = max(fetchDone);
  let log: { phasesMs?: Record<string, number>; shardsAhead?: number } = {};
  try {
    if (reportLog !== undefined) log = JSON.parse(reportLog) as typeof log;
  } catch {
    log = {};
  }
  return {
    enqueued: Math.round(enqueued - t0),
    lastFetchDone,
    lastRouteStart: max(routes.map((r) => num(r[0]))),
    lastRouteDone: max(routes.map((r) => num(r[1]))),
    reportStart: num(report[0]),
    reportDone: num(report[1]),
    seen: Math.round(seen - t0),
    afterFetch: Math.round(seen - t0 - lastFetchDone),
    ...(log.phasesMs ? { phases: log.phasesMs } : {}),
    ...(log.shardsAhead !== undefined ? { shardsAhead: log.shardsAhead } : {}),
  };
}

function formatTail(t: Tail): string {
  const phases = t.phases ? `; report phases ${Object.entries(t.phases).map(([k, v]) => `${k} ${v}`).join(', ')}` : '';
  const ahead = t.shardsAhead !== undefined ? `; shards merged ahead ${t.shardsAhead}` : '';
  return `enqueued ${t.enqueued}, last fetch done ${t.lastFetchDone}, last route ${t.lastRouteStart}–${t.lastRouteDone}, report ${t.reportStart}–${t.reportDone}, seen ${t.seen}: ${t.afterFetch} ms after the fetch stage${phases}${ahead}`;
}

interface Measured {
  seconds: number;
  redisPeakBytes: number;
  workers: { role: string; label: string; peakRssMB: number }[];
  rssAfterRunMB?: number[][];
  /** CPU seconds per run of each worker process, the Redis server and the benchmark process itself. */
  cpuSeconds: Record<string, number>;
  /** Orchestration CPU per run: Redis, the worker processes' main threads, this process. */
  orchestration: Orchestration;
  /** Per worker process, CPU seconds of its busiest threads over all the timed runs (real flow only). */
  threads?: string[];
  /** Stage timings of the last run, from its summary.json. */
  stagesMs?: Record<string, number>;
  /** The last run's timeline after its fetch stage, from its jobs' timestamps and the report worker's log. */
  tail?: Tail;
  /** What `--attribute` needs: each worker process's pid, role and main-thread CPU over the timed runs, and their span. */
  timed: { pids: (number | undefined)[]; roles: string[]; mainSeconds: number[]; fromUs: number; toUs: number };
}

/** The monotonic clock of V8's CPU profiles, in microseconds. */
const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n);

function timedSpan(procs: Proc[], before: CpuSnapshot, after: CpuSnapshot, fromUs: number, toUs: number): Measured['timed'] {
  return { pids: procs.map((p) => p.child.pid), roles: procs.map((p) => p.role), mainSeconds: after.main.map((v, i) => v - before.main[i]!), fromUs, toUs };
}

function stageTimes(reportDir: string): Record<string, number> | undefined {
  try {
    const s = JSON.parse(readFileSync(path.join(reportDir, 'summary.json'), 'utf8')) as { timings?: Record<string, number> };
    return s.timings;
  } catch {
    return undefined;
  }
}

/** Worker processes per stage. */
export type ProcPlan = Record<Role, number>;

/** What one measurement runs: the tickers, their days and shard size, and the worker processes per stage. */
interface Workload {
  tickers: string[];
  days: number;
  shardSize: number;
  procs: ProcPlan;
}

/**
 * Starts the fetch, route and report processes (`argv(role)` after the loader) and waits for each to be ready. The
 * fetch processes learn how many of them share this host (MOE_HOST_PROCS), so their feature pools split its CPUs.
 */
async function startWorkers(procs: Proc[], env: NodeJS.ProcessEnv, plan: ProcPlan, argv: (role: Role) => string[], ready: string): Promise<void> {
  const procEnv = { ...env, MOE_HOST_PROCS: String(plan.fetch) };
  for (const role of ROLES) for (let i = 0; i < plan[role]; i++) procs.push(await startProc(role, argv(role), procEnv, ready));
}

/** The producer side of a measured flow: a FlowProducer and report-queue events on their own connection. */
async function openProducer(target: RedisTarget, redis: RedisClient, prefix: string) {
  const flow = new FlowProducer({ connection: redis, prefix });
  const eventsRedis = createRedis(target, { role: 'worker', name: 'moe-bench-events' });
  const events = new QueueEvents(QUEUE_NAMES.report, { connection: eventsRedis, prefix });
  await events.waitUntilReady();
  return {
    flow,
    events,
    close: async () => {
      await Promise.allSettled([flow.close(), events.close()]);
      await closeRedis(eventsRedis);
    },
  };
}

async function measureBare(target: RedisTarget, redis: RedisClient, env: NodeJS.ProcessEnv, prefix: string, work: Workload): Promise<Measured> {
  const { tickers, days, shardSize } = work;
  const procs: Proc[] = [];
  try {
    await startWorkers(procs, env, work.procs, (role) => [SELF, '--bare-worker', role], 'ready');
    const { flow, events, close } = await openProducer(target, redis, prefix);
    const base = await redisUsedMemory(redis);
    const sampler = startSampler(redis, procs);
    const runId = randomUUID();
    const cpu0 = await cpuSnapshot(procs, redis);
    const us0 = monotonicUs();
    const t0 = performance.now();
    // Same shape, options and payload sizes as enqueueRun's flow.
    const plan = shardPlan(tickers.length, shardSize);
    const node = await flow.add({
      name: 'report',
      queueName: QUEUE_NAMES.report,
      data: { runId, source: 'sim', createdAt: new Date().toISOString(), shards: plan.shards, shardSize: plan.size },
      opts: { ...REPORT_JOB_OPTIONS, jobId: jobIds.report(runId) },
      children: Array.from({ length: plan.shards }, (_, shard) => {
        const own = tickers.slice(shard * plan.size, (shard + 1) * plan.size);
        return {
          name: 'route',
          queueName: QUEUE_NAMES.route,
          data: { runId, shard, tickers: own },
          opts: { ...ROUTE_JOB_OPTIONS, jobId: jobIds.route(runId, shard) },
          children: own.map((ticker) => ({
            name: 'fetch',
            queueName: QUEUE_NAMES.fetch,
            data: { runId, ticker, source: 'sim', range: { days }, seed: 7 },
            opts: { ...FETCH_JOB_OPTIONS, jobId: jobIds.fetch(runId, ticker) },
          })),
        };
      }),
    });
    await node.job.waitUntilFinished(events);
    const seconds = (performance.now() - t0) / 1000;
    const us1 = monotonicUs();
    const cpu1 = await cpuSnapshot(procs, redis);
    const peak = await sampler.stop();
    await close();
    return {
      seconds,
      redisPeakBytes: Math.max(0, peak - base),
      workers: procs.map((p, i) => ({ role: p.role, label: procLabel(procs, i), peakRssMB: p.peakRssKb / 1024 })),
      cpuSeconds: cpuUsed(procs, cpu0, cpu1, 1),
      orchestration: orchestration(cpu0, cpu1, 1, tickers.length),
      timed: timedSpan(procs, cpu0, cpu1, us0, us1),
    };
  } finally {
    await stopProcs(procs);
  }
}

async function measureReal(target: RedisTarget, redis: RedisClient, env: NodeJS.ProcessEnv, prefix: string, work: Workload, runs: number): Promise<Measured> {
  const { tickers, days, shardSize } = work;
  const procs: Proc[] = [];
  try {
    const only = (role: Role) => [WORKERS_CLI, '--only', role, ...(role === 'fetch' ? ['--concurrency', String(CONCURRENCY.fetch)] : [])];
    await startWorkers(procs, env, work.procs, only, 'workers started');
    const { flow, events, close } = await openProducer(target, redis, prefix);
    const base = await redisUsedMemory(redis);
    const sampler = startSampler(redis, procs);
    const reportQueue = new Queue(QUEUE_NAMES.report, { connection: redis, prefix });
    // One small run first: worker threads (feature pool, render pool) start lazily and load their modules on first
    // use; a service that is up pays that once, so the timed runs measure the steady state.
    const warm = await enqueueRun({ flow, redis, prefix, runTtlSeconds: 3600, shardSize }, { tickers: tickers.slice(0, 20), source: 'sim', range: { days }, seed: 7 });
    await (await reportQueue.getJob(warm.reportJobId))?.waitUntilFinished(events);
    const times: number[] = [];
    let stages: Record<string, number> | undefined;
    let tail: Tail | undefined;
    const rssAfterRunMB: number[][] = [];
    const threads0 = procs.map((p) => threadCpu(p.child.pid));
    const cpu0 = await cpuSnapshot(procs, redis);
    const us0 = monotonicUs();
    let last: TimedRun | undefined;
    for (let r = 0; r < runs; r++) {
      const t0 = performance.now();
      const epoch0 = Date.now();
      const run = await enqueueRun({ flow, redis, prefix, runTtlSeconds: 3600, shardSize }, { tickers, source: 'sim', range: { days }, seed: 7 });
      const enqueued = Date.now();
      const job = await reportQueue.getJob(run.reportJobId);
      if (job === undefined) throw new Error(`report job ${run.reportJobId} not found right after enqueue`);
      const result = (await job.waitUntilFinished(events)) as { routed?: number; failed?: number; reportDir?: string };
      times.push((performance.now() - t0) / 1000);
      last = { ...run, t0: epoch0, enqueued, seen: Date.now() };
      if (result.reportDir) stages = stageTimes(result.reportDir);
      if (result.routed !== tickers.length) throw new Error(`run ${run.runId} routed ${result.routed} of ${tickers.length} tickers (${result.failed} failed)`);
      rssAfterRunMB.push(procs.map((p) => Math.round(rssKb(p.child.pid) / 102.4) / 10));
    }
    const us1 = monotonicUs();
    const cpu1 = await cpuSnapshot(procs, redis);
    if (last !== undefined) tail = await tailTimeline(redis, prefix, last, procs.find((p) => p.role === 'report')?.reportLog);
    const threads = procs.map((p, i) => `${procLabel(procs, i)}: ${threadCpuUsed(threads0[i]!, threadCpu(p.child.pid), cpu1.procs[i]! - cpu0.procs[i]!)}`);
    const cpu = cpuUsed(procs, cpu0, cpu1, runs);
    const peak = await sampler.stop();
    await Promise.allSettled([close(), reportQueue.close()]);
    const out: Measured = {
      seconds: times.reduce((a, b) => a + b, 0) / times.length,
      redisPeakBytes: Math.max(0, peak - base),
      workers: procs.map((p, i) => ({ role: p.role, label: procLabel(procs, i), peakRssMB: p.peakRssKb / 1024 })),
      cpuSeconds: cpu,
      orchestration: orchestration(cpu0, cpu1, runs, tickers.length),
      threads,
      timed: timedSpan(procs, cpu0, cpu1, us0, us1),
    };
    if (runs > 1) out.rssAfterRunMB = rssAfterRunMB;
    if (stages) out.stagesMs = stages;
    if (tail) out.tail = tail;
    return out;
  } catch (err) {
    for (const p of procs) if (p.stderr) console.error(`[${p.role} stderr] ${p.stderr}`);
    throw err;
  } finally {
    await stopProcs(procs);
  }
}

/**
 * Orchestration as docs/performance.md defines it: Redis, the BullMQ and ioredis part of each worker main thread (by
 * its CPU profile over the timed runs), this process. A thread without samples in that span counts whole.
 */
interface Attributed {
  msPerTicker: number;
  cpuSeconds: number;
  parts: { redis: number; queueMain: number; bench: number };
  /** Per worker main thread: its CPU seconds per run, and the share of its profile's samples per kind of code. */
  mains: { role: string; cpuSeconds: number; shares: Record<string, number> }[];
}

async function attributeOrchestration(dir: string, m: Measured, tickers: number, runs: number): Promise<Attributed> {
  const files = await readdir(dir);
  const mains: Attributed['mains'] = [];
  let queueMain = 0;
  for (const [i, pid] of m.timed.pids.entries()) {
    // Node names a thread's profile CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile; thread 0 is the main thread.
    const file = files.find((f) => {
      const [, , , filePid, thread] = f.split('.');
      return pid !== undefined && f.endsWith('.cpuprofile') && filePid === String(pid) && thread === '0';
    });
    if (file === undefined) throw new Error(`Expected a CPU profile of process ${String(pid)} (${m.timed.roles[i]}) in ${dir} but found none`);
    const profile = JSON.parse(await readFile(path.join(dir, file), 'utf8')) as CpuProfile;
    const shares = codeShares(profileBuckets(profile, `${REPO}/`, { fromUs: m.timed.fromUs, toUs: m.timed.toUs }));
    const cpu = m.timed.mainSeconds[i]! / runs;
    queueMain += cpu * (shares === undefined ? 1 : shares.bullmq + shares.ioredis);
    mains.push({
      role: m.timed.roles[i]!,
      cpuSeconds: round2(cpu),
      shares: Object.fromEntries(CODE_BUCKETS.map((k) => [k, shares === undefined ? 0 : Number(shares[k].toFixed(3))])),
    });
  }
  const { redis, bench } = m.orchestration.parts;
  const total = redis + queueMain + bench;
  return { msPerTicker: Math.round((total / tickers) * 1e6) / 1e3, cpuSeconds: round2(total), parts: { redis, queueMain: round2(queueMain), bench }, mains };
}

function formatAttributed(a: Attributed): string {
  const mains = a.mains.map((m) => `${m.role} ${m.cpuSeconds.toFixed(2)} s: ${Object.entries(m.shares).map(([k, v]) => `${k} ${(100 * v).toFixed(0)}%`).join(' ')}`);
  return `${a.msPerTicker.toFixed(3)} ms/ticker, ${a.cpuSeconds.toFixed(2)} CPU-s (Redis ${a.parts.redis.toFixed(2)}, BullMQ + ioredis on worker main threads ${a.parts.queueMain.toFixed(2)}, bench ${a.parts.bench.toFixed(2)}; ${mains.join('; ')})`;
}

const mb = (b: number) => Math.round(b / 104857.6) / 10;

function formatCpu(c: Record<string, number>): string {
  const total = Object.values(c).reduce((a, b) => a + b, 0);
  return `${total.toFixed(2)} in all (${Object.entries(c).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')})`;
}

function formatOrchestration(o: Orchestration): string {
  return `${o.msPerTicker.toFixed(3)} ms/ticker, ${o.cpuSeconds.toFixed(2)} CPU-s (Redis ${o.parts.redis.toFixed(2)}, worker main threads ${o.parts.workerMain.toFixed(2)}, bench ${o.parts.bench.toFixed(2)})`;
}

/** Most processes of one stage the benchmark starts. */
const MAX_PROCS = 64;

/** Fetch process counts of `--sweep-fetch-procs`: distinct integers in 1..`MAX_PROCS`, in the order given. */
export function sweepCounts(raw: string): number[] {
  const items = raw.split(',').map((x) => x.trim());
  const bad = items.find((x) => !/^\d+$/.test(x) || Number(x) < 1 || Number(x) > MAX_PROCS);
  if (raw.trim() === '' || bad !== undefined) {
    throw new UsageError(`Expected a comma-separated list of integers in 1..${MAX_PROCS} for --sweep-fetch-procs but received ${JSON.stringify(raw)}`);
  }
  return [...new Set(items.map(Number))];
}

/** One row of a fetch-process sweep. */
export interface SweepRow {
  fetchProcs: number;
  /** Feature threads of all fetch processes together (each process's `defaultFeatureThreads`). */
  featureThreads: number;
  seconds: number;
  tickersPerSecond: number;
  fetchStageSeconds: number | undefined;
  cpuSeconds: number;
  /** Redis's peak memory above its level before the run, MB. */
  redisPeakMB: number;
  /** Highest peak RSS of any process of each role, MB. */
  peakRssMB: Record<string, number>;
  /** Tickers/s per fetch process relative to one process (or to the sweep's first count when 1 is not in it). */
  efficiency: number;
  /**
   * Tickers/s per feature thread, relative likewise. A host's cores cap the threads (one process may already take
   * `MAX_DEFAULT_FEATURE_THREADS`), so per-process efficiency falls as 1/P once they are all in use, whatever the
   * queue does; this one says how well the threads that exist are used.
   */
  threadEfficiency: number;
  /**
   * The highest `efficiency` the host's CPUs allow at this row's CPU per ticker: a run cannot spend more than
   * cpus × seconds of CPU, so tickers/s ≤ cpus ÷ (CPU-s per ticker of every process, Redis included), and the ceiling is
   * that rate per fetch process against the base row's. Where it is below a target, no scheduling of the same work
   * reaches the target on this host; only less CPU per ticker does.
   */
  cpuCeiling: number;
}

/**
 * Efficiency of each row: (tickers/s ÷ fetch processes) over the same for the base row, the count 1 when swept,
 * else the first count.
 */
export function sweepEfficiency(rows: Omit<SweepRow, 'efficiency' | 'threadEfficiency' | 'cpuCeiling'>[], cpus: number): SweepRow[] {
  type Measured = Omit<SweepRow, 'efficiency' | 'threadEfficiency' | 'cpuCeiling'>;
  const base = rows.find((r) => r.fetchProcs === 1) ?? rows[0];
  const round = (v: number) => Math.round(v * 100) / 100;
  const rel = (per: (r: Measured) => number, r: Measured) => (base === undefined ? Number.NaN : round(per(r) / per(base)));
  const perProcess = (x: Measured) => x.tickersPerSecond / x.fetchProcs;
  return rows.map((r) => {
    const cpuPerTicker = r.cpuSeconds / (r.tickersPerSecond * r.seconds);
    return {
      ...r,
      efficiency: rel(perProcess, r),
      threadEfficiency: rel((x) => x.tickersPerSecond / x.featureThreads, r),
      cpuCeiling: base === undefined || !(cpuPerTicker > 0) ? Number.NaN : round(cpus / cpuPerTicker / r.fetchProcs / perProcess(base)),
    };
  });
}

export function main(argv: readonly string[], out: (line: string) => void = console.log): Promise<number> {
  return runCommand('bench:pipeline', () => benchPipeline(argv, out));
}

async function benchPipeline(argv: readonly string[], out: (line: string) => void): Promise<number> {
  const args = parseArgs(argv, FLAGS);
  if (args.flags.has('help')) {
    out(BENCH_PIPELINE_USAGE);
    return EXIT.ok;
  }
  const bareRole = args.flags.get('bare-worker');
  if (typeof bareRole === 'string') {
    if (!(ROLES as readonly string[]).includes(bareRole)) throw new UsageError(`Expected one of ${ROLES.join(', ')} for --bare-worker but received ${JSON.stringify(bareRole)}`);
    await bareWorker(bareRole as Role);
    return EXIT.ok;
  }
  if (!args.flags.has('tickers')) throw new UsageError('Expected --tickers N but received nothing');
  if (args.positionals.length > 0) throw new UsageError(`Expected no positional arguments but received ${JSON.stringify(args.positionals[0])}`);
  const tickersN = intFlag(args, 'tickers', 0, 1, MAX_TICKERS);
  const days = intFlag(args, 'days', 60, 1, MAX_DAYS);
  const runs = intFlag(args, 'runs', 1, 1, 1000);
  const procPlan: ProcPlan = {
    fetch: intFlag(args, 'fetch-procs', 1, 1, MAX_PROCS),
    route: intFlag(args, 'route-procs', 1, 1, MAX_PROCS),
    report: intFlag(args, 'report-procs', 1, 1, MAX_PROCS),
  };
  const sweepRaw = stringFlag(args, 'sweep-fetch-procs');
  const sweep = sweepRaw === undefined ? undefined : sweepCounts(sweepRaw);
  if (sweep !== undefined && args.flags.has('fetch-procs')) {
    throw new UsageError(`Expected either --fetch-procs or --sweep-fetch-procs but received both (${JSON.stringify(stringFlag(args, 'fetch-procs'))} and ${JSON.stringify(sweepRaw)})`);
  }
  const json = args.flags.has('json');
  const showThreads = args.flags.has('threads');
  const prof = args.flags.get('cpu-prof');
  const attribute = args.flags.has('attribute');
  if (attribute && sweep !== undefined) throw new UsageError('Expected --attribute without --sweep-fetch-procs but received both');
  const config = loadConfig();

  // A hash tag on a cluster (every key in one slot), as the workers derive from MOE_PREFIX themselves.
  const prefix = config.redisCluster ? hashTaggedPrefix(`bench-${randomUUID().slice(0, 8)}`) : `bench-${randomUUID().slice(0, 8)}`;
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-bench-'));
  const profDir = typeof prof === 'string' ? path.resolve(prof) : attribute ? path.join(tmp, 'profiles') : undefined;
  workerNodeArgs = profDir !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [];
  // A short lock keeps the benchmark honest about BullMQ's lock renewals without changing their count much.
  const env: NodeJS.ProcessEnv = { ...process.env, MOE_PREFIX: prefix, REPORTS_DIR: path.join(tmp, 'reports'), LOG_LEVEL: 'info', MOE_SKIP_SETUP: '1' };
  const redis = await connectClient(config, 'moe-bench-pipeline');
  const tickers = benchTickers(tickersN);
  const load0 = os.loadavg();
  const cpus = os.availableParallelism();
  const work = (fetch: number): Workload => ({ tickers, days, shardSize: config.shardSize, procs: { ...procPlan, fetch } });
  try {
    const plan = shardPlan(tickersN, config.shardSize);
    const procsText = (fetch: number) =>
      `${fetch} fetch process(es) × ${defaultFeatureThreads(fetch, cpus)} feature thread(s) + ${procPlan.route} route + ${procPlan.report} report`;
    const head = `bench:pipeline: ${tickersN} tickers × ${days} days in ${plan.shards} shard(s) of ${plan.size}`;
    const loadText = `${cpus} CPUs, load ${load0.map((l) => l.toFixed(2)).join(' ')}`;
    if (sweep !== undefined) {
      out(`${head}, fetch processes ${sweep.join(', ')} + ${procPlan.route} route + ${procPlan.report} report, ${loadText}`);
      out('fetch procs | threads each | wall s | tickers/s | fetch stage s | CPU-s all processes | Redis +MB | peak RSS fetch/route/report MB | efficiency | per thread | CPU ceiling');
      const measured: Omit<SweepRow, 'efficiency' | 'threadEfficiency' | 'cpuCeiling'>[] = [];
      for (const n of sweep) {
        const real = await measureReal(config, redis, env, prefix, work(n), runs);
        await removePrefix(redis, prefix);
        const fetchMs = real.stagesMs?.fetchMs;
        const peakRssMB: Record<string, number> = {};
        for (const w of real.workers) peakRssMB[w.role] = Math.max(peakRssMB[w.role] ?? 0, Math.round(w.peakRssMB));
        measured.push({
          fetchProcs: n,
          featureThreads: n * defaultFeatureThreads(n, cpus),
          redisPeakMB: mb(real.redisPeakBytes),
          peakRssMB,
          seconds: Number(real.seconds.toFixed(3)),
          tickersPerSecond: Number((tickersN / real.seconds).toFixed(1)),
          fetchStageSeconds: fetchMs === undefined ? undefined : fetchMs / 1000,
          cpuSeconds: round2(Object.values(real.cpuSeconds).reduce((a, b) => a + b, 0)),
        });
      }
      // Printed once all are measured: the base row (the count 1) may come last in the list.
      for (const r of sweepEfficiency(measured, cpus)) {
        out(
          `${String(r.fetchProcs).padStart(11)} | ${String(defaultFeatureThreads(r.fetchProcs, cpus)).padStart(12)} | ${r.seconds.toFixed(2).padStart(6)} | ${r.tickersPerSecond.toFixed(0).padStart(9)} | ${(r.fetchStageSeconds?.toFixed(2) ?? '-').padStart(13)} | ${r.cpuSeconds.toFixed(2).padStart(19)} | ${r.redisPeakMB.toFixed(1).padStart(9)} | ${['fetch', 'route', 'report'].map((k) => r.peakRssMB[k] ?? '-').join(' / ').padStart(30)} | ${r.efficiency.toFixed(2).padStart(10)} | ${r.threadEfficiency.toFixed(2).padStart(10)} | ${r.cpuCeiling.toFixed(2)}`,
        );
      }
      if (json) out(JSON.stringify({ tickers: tickersN, days, runs, routeProcs: procPlan.route, reportProcs: procPlan.report, cpus, sweep: sweepEfficiency(measured, cpus), prefix }));
      return EXIT.ok;
    }
    out(`${head}, ${procsText(procPlan.fetch)}, ${loadText}`);
    const bare = await measureBare(config, redis, env, prefix, work(procPlan.fetch));
    await removePrefix(redis, prefix);
    out(`bare flow:  ${bare.seconds.toFixed(2)} s  (${(tickersN / bare.seconds).toFixed(0)} tickers/s, Redis +${mb(bare.redisPeakBytes)} MB)`);
    out(`  CPU seconds: ${formatCpu(bare.cpuSeconds)}`);
    const real = await measureReal(config, redis, env, prefix, work(procPlan.fetch), runs);
    out(`pipeline:   ${real.seconds.toFixed(2)} s${runs > 1 ? ` (mean of ${runs} runs)` : ''}  (${(tickersN / real.seconds).toFixed(0)} tickers/s, ${(real.seconds / bare.seconds).toFixed(2)}× bare, Redis +${mb(real.redisPeakBytes)} MB)`);
    out(`  CPU seconds${runs > 1 ? ' per run' : ''}: ${formatCpu(real.cpuSeconds)}`);
    if (real.stagesMs) out(`  stages (last run): ${Object.entries(real.stagesMs).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    if (real.tail) out(`  tail (last run, ms from enqueue): ${formatTail(real.tail)}`);
    if (showThreads) for (const t of real.threads ?? []) out(`  threads ${t}`);
    for (const w of real.workers) out(`  ${w.label.padEnd(7)} worker peak RSS ${w.peakRssMB.toFixed(0)} MB`);
    if (real.rssAfterRunMB) {
      out(`  RSS after each run (MB, ${real.workers.map((w) => w.label).join('/')}):`);
      real.rssAfterRunMB.forEach((r, i) => out(`    run ${String(i + 1).padStart(2)}: ${r.join(' / ')}`));
    }
    const overheadRatio = real.orchestration.msPerTicker / bare.orchestration.msPerTicker;
    out(`orchestration (Redis + worker main threads + bench), per ticker:`);
    out(`  bare flow: ${formatOrchestration(bare.orchestration)}`);
    out(`  pipeline:  ${formatOrchestration(real.orchestration)}${runs > 1 ? ' per run' : ''}`);
    out(`  ratio ${overheadRatio.toFixed(2)}× the bare flow`);
    let attributed: { bare: Attributed; real: Attributed; ratio: number } | undefined;
    if (attribute) {
      const a = { bare: await attributeOrchestration(profDir!, bare, tickersN, 1), real: await attributeOrchestration(profDir!, real, tickersN, runs) };
      attributed = { ...a, ratio: a.real.msPerTicker / a.bare.msPerTicker };
      out(`orchestration as defined (Redis + the BullMQ and ioredis share of each worker main thread, by its profile + bench), per ticker:`);
      out(`  bare flow: ${formatAttributed(a.bare)}`);
      out(`  pipeline:  ${formatAttributed(a.real)}${runs > 1 ? ' per run' : ''}`);
      out(`  ratio ${attributed.ratio.toFixed(2)}× the bare flow`);
    }
    const load1 = os.loadavg();
    if (json) {
      out(
        JSON.stringify({
          tickers: tickersN,
          days,
          shards: plan.shards,
          shardSize: plan.size,
          runs,
          fetchProcs: procPlan.fetch,
          routeProcs: procPlan.route,
          reportProcs: procPlan.report,
          featureThreads: defaultFeatureThreads(procPlan.fetch, cpus),
          seconds: Number(real.seconds.toFixed(3)),
          bareSeconds: Number(bare.seconds.toFixed(3)),
          ratio: Number((real.seconds / bare.seconds).toFixed(2)),
          tickersPerSecond: Number((tickersN / real.seconds).toFixed(1)),
          redisPeakMB: mb(real.redisPeakBytes),
          bareRedisPeakMB: mb(bare.redisPeakBytes),
          cpuSeconds: real.cpuSeconds,
          bareCpuSeconds: bare.cpuSeconds,
          orchestration: real.orchestration,
          bareOrchestration: bare.orchestration,
          orchestrationRatio: Number.isFinite(overheadRatio) ? Number(overheadRatio.toFixed(2)) : null,
          ...(attributed ? { attributedOrchestration: attributed.real, bareAttributedOrchestration: attributed.bare, attributedRatio: Number(attributed.ratio.toFixed(2)) } : {}),
          workerPeakRssMB: Object.fromEntries(real.workers.map((w) => [w.label, Math.round(w.peakRssMB)])),
          ...(real.stagesMs ? { stagesMs: real.stagesMs } : {}),
          ...(real.tail ? { tailMs: real.tail } : {}),
          ...(real.rssAfterRunMB ? { rssAfterRunMB: real.rssAfterRunMB } : {}),
          cpus,
          prefix,
          loadBefore: load0.map((l) => Number(l.toFixed(2))),
          loadAfter: load1.map((l) => Number(l.toFixed(2))),
        }),
      );
    }
    return EXIT.ok;
  } catch (err) {
    throw new CommandError(errorText(err), EXIT.failed, { cause: err });
  } finally {
    await removePrefix(redis, prefix);
    await closeRedis(redis);
    await rm(tmp, { recursive: true, force: true });
  }
}

await runIfMain(import.meta.url, main);
