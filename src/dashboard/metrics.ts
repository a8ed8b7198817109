import type { Job, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { RouteResult } from '../../jobs/payloads.js';
import { runsIndexKey } from '../../jobs/keys.js';
import { RUN_STATUSES, readRunMeta } from '../../jobs/run-meta.js';

/**
 * `/metrics` in the Prometheus text format (version 0.0.4). Everything is read from Redis at scrape time, so any
 * number of dashboards, on any host, report the same numbers and keep no state of their own.
 */

/** Job states BullMQ counts per queue. */
export const JOB_STATES = ['waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized', 'waiting-children'] as const;

/** Completed jobs per queue whose durations make the quantiles: recent enough to follow changes, cheap to read. */
export const DURATION_WINDOW = 200;
const QUANTILES = [0.5, 0.9, 0.99] as const;
/** Runs (newest first) counted in `moe_runs`. */
const RUNS_WINDOW = 500;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function labels(l: Record<string, string>): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length > 0 ? `{${parts.join(',')}}` : '';
}

class Exposition {
  private readonly lines: string[] = [];

  family(name: string, type: 'gauge' | 'counter', help: string): this {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    return this;
  }

  sample(name: string, l: Record<string, string>, value: number): this {
    const v = Number.isFinite(value) ? String(value) : value > 0 ? '+Inf' : value < 0 ? '-Inf' : 'NaN';
    this.lines.push(`${name}${labels(l)} ${v}`);
    return this;
  }

  toString(): string {
    return `${this.lines.join('\n')}\n`;
  }
}

/** Linear-interpolated quantile of sorted values. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

function durationSeconds(job: Job): number | undefined {
  if (job.processedOn === undefined || job.finishedOn === undefined) return undefined;
  return Math.max(0, job.finishedOn - job.processedOn) / 1000;
}

function isRouteResult(v: unknown): v is Pick<RouteResult, 'tokens' | 'forwardMs' | 'backend'> {
  if (v === null || typeof v !== 'object') return false;
  const r = v as Record<string, unknown>;
  return typeof r.tokens === 'number' && typeof r.forwardMs === 'number' && typeof r.backend === 'string';
}

export interface MetricsSources {
  redis: Redis;
  prefix: string;
  /** The three pipeline queues, by name. */
  queues: readonly Queue[];
  /** Name of the route queue among `queues`. */
  routeQueue: string;
}

export async function renderMetrics(src: MetricsSources): Promise<string> {
  const out = new Exposition();

  out.family('moe_queue_jobs', 'gauge', 'Jobs per queue and state.');
  const counts = await Promise.all(src.queues.map((q) => q.getJobCounts(...JOB_STATES)));
  src.queues.forEach((q, i) => {
    for (const state of JOB_STATES) out.sample('moe_queue_jobs', { queue: q.name, state }, counts[i]![state] ?? 0);
  });

  // BullMQ 6 has no "paused" job state: pausing is a flag of the queue, reported on its own.
  out.family('moe_queue_paused', 'gauge', '1 when the queue is paused.');
  const paused = await Promise.all(src.queues.map((q) => q.isPaused()));
  src.queues.forEach((q, i) => out.sample('moe_queue_paused', { queue: q.name }, paused[i] ? 1 : 0));

  const recent = await Promise.all(src.queues.map((q) => q.getJobs(['completed'], 0, DURATION_WINDOW - 1)));
  out.family(
    'moe_job_duration_seconds',
    'gauge',
    `Processing time (start to finish) of the last ${DURATION_WINDOW} completed jobs per queue, by quantile; NaN when none.`,
  );
  const sums: [string, number, number][] = [];
  src.queues.forEach((q, i) => {
    const secs = recent[i]!.map(durationSeconds).filter((s): s is number => s !== undefined).sort((a, b) => a - b);
    for (const p of QUANTILES) out.sample('moe_job_duration_seconds', { queue: q.name, quantile: String(p) }, quantile(secs, p));
    sums.push([q.name, secs.length, secs.reduce((a, b) => a + b, 0)]);
  });
  out.family('moe_job_duration_window_jobs', 'gauge', 'Completed jobs the duration quantiles are taken over.');
  for (const [queue, n] of sums) out.sample('moe_job_duration_window_jobs', { queue }, n);
  out.family('moe_job_duration_window_seconds_sum', 'gauge', 'Total processing time of those jobs.');
  for (const [queue, , s] of sums) out.sample('moe_job_duration_window_seconds_sum', { queue }, s);

  // Router throughput of the newest completed route job that routed something (a run whose tickers all failed
  // routes no token and says nothing about speed): tokens over the native forward pass alone.
  const routeIdx = src.queues.findIndex((q) => q.name === src.routeQueue);
  const routeJobs = (routeIdx >= 0 ? recent[routeIdx]! : [])
    .filter((j) => isRouteResult(j.returnvalue) && j.finishedOn !== undefined)
    .sort((a, b) => (b.finishedOn ?? 0) - (a.finishedOn ?? 0))
    .map((j) => j.returnvalue as Pick<RouteResult, 'tokens' | 'forwardMs' | 'backend'>);
  const newest = routeJobs[0];
  const measured = routeJobs.find((r) => r.tokens > 0 && r.forwardMs > 0);
  out.family('moe_router_tokens_per_second', 'gauge', 'Tokens (ticker-days) per second of the native forward pass in the newest completed route job that routed tokens.');
  if (measured) out.sample('moe_router_tokens_per_second', { backend: measured.backend }, (measured.tokens * 1000) / measured.forwardMs);
  out.family('moe_router_backend_info', 'gauge', 'Router backend of the newest completed route job (value 1).');
  if (newest) out.sample('moe_router_backend_info', { backend: newest.backend }, 1);
  out.family('moe_router_last_run_tokens', 'gauge', 'Tokens routed by the newest completed route job.');
  if (newest) out.sample('moe_router_last_run_tokens', { backend: newest.backend }, newest.tokens);

  out.family('moe_runs', 'gauge', `Runs by status among the newest ${RUNS_WINDOW} (run hashes expire after RUN_TTL_SECONDS).`);
  const ids = await src.redis.zrevrange(runsIndexKey(src.prefix), 0, RUNS_WINDOW - 1);
  const metas = await Promise.all(ids.map((id) => readRunMeta(src.redis, src.prefix, id)));
  for (const status of RUN_STATUSES) out.sample('moe_runs', { status }, metas.filter((m) => m?.status === status).length);
  return out.toString();
}
