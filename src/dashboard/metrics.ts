import type { Job, Queue } from 'bullmq';
import type { RedisClient } from '../../jobs/connection.js';
import { Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RouteResult } from '../../jobs/payloads.js';
import { runsIndexKey } from '../../jobs/keys.js';
import { RUN_STATUSES, readRunMeta, type RunStatus } from '../../jobs/run-meta.js';
import { JobDurationObserver, PAGE_JOBS, durationSeconds } from './job-durations.js';

/**
 * `/metrics` through prom-client: one Registry per dashboard app, holding the process's default metrics and
 * gauges that read Redis when scraped. The pipeline's numbers live in Redis, so any number of dashboards, on any
 * host, report the same gauges; only the job duration histogram is this dashboard's own (it counts what it saw
 * complete, see job-durations.ts).
 */

/** Job states BullMQ counts per queue. */
export const JOB_STATES = ['waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized', 'waiting-children'] as const;

/** Completed jobs per queue whose durations make the recent quantiles: recent enough to follow changes, cheap to read. */
export const DURATION_WINDOW = PAGE_JOBS;
const QUANTILES = [0.5, 0.9, 0.99] as const;
/** Runs (newest first) counted in `moe_runs`. */
const RUNS_WINDOW = 500;

/**
 * Buckets of `moe_job_duration_seconds`: a simulated fetch takes milliseconds, a Yahoo fetch with retries and
 * back-off up to about a minute, a 1,000-ticker report some seconds.
 */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300] as const;

/** Linear-interpolated quantile of sorted values. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

type RouteSpeed = Pick<RouteResult, 'tokens' | 'forwardMs' | 'backend'>;

function isRouteResult(v: unknown): v is RouteSpeed {
  if (v === null || typeof v !== 'object') return false;
  const r = v as Record<string, unknown>;
  return typeof r.tokens === 'number' && typeof r.forwardMs === 'number' && typeof r.backend === 'string';
}

export interface MetricsSources {
  redis: RedisClient;
  prefix: string;
  /** The three pipeline queues, by name. */
  queues: readonly Queue[];
  /** Name of the route queue among `queues`. */
  routeQueue: string;
}

/** What one scrape read from Redis. */
interface Snapshot {
  queues: { name: string; counts: Record<string, number>; paused: boolean; recentSeconds: number[] }[];
  /** Newest completed route job, and the newest one that routed tokens (a run whose tickers all failed routes none). */
  newestRoute: RouteSpeed | undefined;
  measuredRoute: RouteSpeed | undefined;
  runs: Record<RunStatus, number>;
}

async function readRuns(src: MetricsSources): Promise<Record<RunStatus, number>> {
  const ids = await src.redis.zrevrange(runsIndexKey(src.prefix), 0, RUNS_WINDOW - 1);
  const metas = await Promise.all(ids.map((id) => readRunMeta(src.redis, src.prefix, id, { tickerList: false })));
  const runs = Object.fromEntries(RUN_STATUSES.map((s) => [s, 0])) as Record<RunStatus, number>;
  for (const m of metas) if (m !== undefined && m.status in runs) runs[m.status] += 1;
  return runs;
}

function routeSpeeds(jobs: readonly Job[]): Pick<Snapshot, 'newestRoute' | 'measuredRoute'> {
  const results = jobs
    .filter((j) => isRouteResult(j.returnvalue) && j.finishedOn !== undefined)
    .sort((a, b) => (b.finishedOn ?? 0) - (a.finishedOn ?? 0))
    .map((j) => j.returnvalue as RouteSpeed);
  return { newestRoute: results[0], measuredRoute: results.find((r) => r.tokens > 0 && r.forwardMs > 0) };
}

async function readSnapshot(src: MetricsSources, durations: JobDurationObserver): Promise<Snapshot> {
  const [counts, paused, recent, runs] = await Promise.all([
    Promise.all(src.queues.map((q) => q.getJobCounts(...JOB_STATES))),
    Promise.all(src.queues.map((q) => q.isPaused())),
    Promise.all(src.queues.map((q) => q.getJobs(['completed'], 0, DURATION_WINDOW - 1))),
    readRuns(src),
  ]);
  await Promise.all(src.queues.map((q, i) => durations.record(q, recent[i]!)));
  const routeIdx = src.queues.findIndex((q) => q.name === src.routeQueue);
  return {
    queues: src.queues.map((q, i) => ({
      name: q.name,
      counts: counts[i]!,
      // BullMQ 6 has no "paused" job state: pausing is a flag of the queue, reported on its own.
      paused: paused[i]!,
      recentSeconds: recent[i]!.map(durationSeconds).filter((s): s is number => s !== undefined).sort((a, b) => a - b),
    })),
    ...routeSpeeds(routeIdx >= 0 ? recent[routeIdx]! : []),
    runs,
  };
}

export interface DashboardMetrics {
  registry: Registry;
  /** The exposition text of one scrape. */
  render(): Promise<string>;
  /** `text/plain; version=0.0.4; charset=utf-8` */
  contentType: string;
}

export function createDashboardMetrics(src: MetricsSources): DashboardMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  const histogram = new Histogram({
    name: 'moe_job_duration_seconds',
    help: 'Processing time (start to finish) of the jobs this dashboard saw complete since it started, per queue.',
    labelNames: ['queue'],
    buckets: [...DURATION_BUCKETS],
    registers: [registry],
    // The observations happen while the snapshot is read; waiting for it puts this scrape's jobs in this scrape.
    collect: () => snapshot().then(() => undefined),
  });
  // Series that exist from the first scrape, at zero: `rate()` and `increase()` see the first job of a queue.
  for (const q of src.queues) histogram.zero({ queue: q.name });
  const durations = new JobDurationObserver(histogram);

  // prom-client collects every metric of a scrape at once (Promise.all): they share one read of Redis, in flight.
  let inFlight: Promise<Snapshot> | undefined;
  const snapshot = (): Promise<Snapshot> =>
    (inFlight ??= readSnapshot(src, durations).finally(() => {
      inFlight = undefined;
    }));

  /** A gauge refilled from the snapshot at every scrape; reset first, so label sets that vanished vanish. */
  const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[], fill: (g: Gauge<L>, s: Snapshot) => void): void => {
    new Gauge<L>({
      name,
      help,
      labelNames,
      registers: [registry],
      async collect() {
        const s = await snapshot();
        this.reset();
        fill(this, s);
      },
    });
  };

  gauge('moe_queue_jobs', 'Jobs per queue and state.', ['queue', 'state'], (g, s) => {
    for (const q of s.queues) for (const state of JOB_STATES) g.set({ queue: q.name, state }, q.counts[state] ?? 0);
  });
  gauge('moe_queue_paused', '1 when the queue is paused.', ['queue'], (g, s) => {
    for (const q of s.queues) g.set({ queue: q.name }, q.paused ? 1 : 0);
  });
  gauge(
    'moe_job_recent_duration_seconds',
    `Processing time (start to finish) of the last ${DURATION_WINDOW} completed jobs per queue, by quantile; absent when none.`,
    ['queue', 'quantile'],
    (g, s) => {
      // Absent rather than NaN: prom-client writes NaN as "Nan", which strict (OpenMetrics) parsers refuse.
      for (const q of s.queues) {
        if (q.recentSeconds.length === 0) continue;
        for (const p of QUANTILES) g.set({ queue: q.name, quantile: String(p) }, quantile(q.recentSeconds, p));
      }
    },
  );
  gauge('moe_job_recent_jobs', 'Completed jobs the recent duration quantiles are taken over.', ['queue'], (g, s) => {
    for (const q of s.queues) g.set({ queue: q.name }, q.recentSeconds.length);
  });
  gauge('moe_job_recent_processing_seconds', 'Total processing time of those jobs.', ['queue'], (g, s) => {
    for (const q of s.queues) g.set({ queue: q.name }, q.recentSeconds.reduce((a, b) => a + b, 0));
  });
  gauge(
    'moe_router_tokens_per_second',
    'Tokens (ticker-days) per second of the native forward pass in the newest completed route job that routed tokens.',
    ['backend'],
    (g, s) => {
      const r = s.measuredRoute;
      if (r) g.set({ backend: r.backend }, (r.tokens * 1000) / r.forwardMs);
    },
  );
  gauge('moe_router_backend_info', 'Router backend of the newest completed route job (value 1).', ['backend'], (g, s) => {
    if (s.newestRoute) g.set({ backend: s.newestRoute.backend }, 1);
  });
  gauge('moe_router_last_run_tokens', 'Tokens routed by the newest completed route job.', ['backend'], (g, s) => {
    if (s.newestRoute) g.set({ backend: s.newestRoute.backend }, s.newestRoute.tokens);
  });
  gauge('moe_runs', `Runs by status among the newest ${RUNS_WINDOW} (run hashes expire after RUN_TTL_SECONDS).`, ['status'], (g, s) => {
    for (const status of RUN_STATUSES) g.set({ status }, s.runs[status]);
  });

  return { registry, render: () => registry.metrics(), contentType: registry.contentType };
}
