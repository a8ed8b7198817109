import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { Job, Queue, type FlowProducer } from 'bullmq';
import type { RedisClient } from './connection.js';
import { validateTicker } from '../src/data/validate.js';
import type { FetchRange, SourceName } from '../src/data/types.js';
import { bullJobKey, isRunId, jobIds, runKey } from './keys.js';
import { QUEUE_NAMES } from './queues.js';
import { createRunMeta, ENQUEUE_FAILED, reopenAfterEnqueueFailure, updateRunMeta, type RunStore } from './run-meta.js';
import { FETCH_JOB_OPTIONS, GATE_JOB_NAME, GATE_JOB_OPTIONS, REPORT_JOB_OPTIONS, ROUTE_JOB_OPTIONS } from './job-options.js';
import { DEFAULT_SHARD_SIZE, MAX_SHARD_SIZE, MAX_SHARDS, MAX_TICKERS } from '../src/limits.js';
import {
  PayloadError,
  validateFetchJobData,
  validateRange,
  validateReportJobData,
  validateRouteJobData,
  type FetchJobData,
  type ReportJobData,
  type RouteJobData,
} from './payloads.js';
import { errorText } from '../src/util/errors.js';

export interface RunRequest {
  /** Tickers as a person typed them; validated, upper-cased and de-duplicated here. */
  tickers: readonly string[];
  source: SourceName;
  range: FetchRange;
  /** Folder of `<TICKER>.csv` files (source `csv`); resolved to an absolute path. */
  dataDir?: string;
  /** Simulator seed (source `sim`). */
  seed?: number;
}

export interface EnqueueContext {
  flow: FlowProducer;
  /** Connection for the run metadata hash. */
  redis: RedisClient;
  /** Key and queue prefix. */
  prefix: string;
  /** TTL of the run metadata hash. */
  runTtlSeconds: number;
  /** Tickers per shard (`Config.shardSize`). @defaultValue `DEFAULT_SHARD_SIZE` (1000) */
  shardSize?: number;
}

export interface EnqueuedRun {
  runId: string;
  /** Canonical tickers, in request order without duplicates. */
  tickers: string[];
  createdAt: string;
  reportJobId: string;
  /** Shards the run is cut into (one route job each). */
  shards: number;
}

async function runExists(store: RunStore, runId: string): Promise<boolean> {
  return (await store.redis.exists(runKey(store.prefix, runId))) === 1;
}

/** Validates and canonicalises tickers; throws PayloadError naming the first bad one. */
export function canonicalTickers(raw: readonly string[]): string[] {
  if (raw.length === 0) throw new PayloadError('tickers', 'Expected at least one ticker for tickers but received none');
  const out: string[] = [];
  const seen = new Set<string>();
  raw.forEach((t, i) => {
    let c: string;
    try {
      c = validateTicker(typeof t === 'string' ? t.trim() : t);
    } catch (err) {
      throw new PayloadError(`tickers[${i}]`, errorText(err));
    }
    if (!seen.has(c)) {
      seen.add(c);
      out.push(c);
    }
  });
  if (out.length > MAX_TICKERS) {
    throw new PayloadError('tickers', `Expected at most ${MAX_TICKERS} tickers for tickers but received ${out.length}`);
  }
  return out;
}

/**
 * How a run of `tickers` tickers is cut: `size` tickers a shard (the last one the rest) in `shards` shards. The
 * configured size, raised for a run that would otherwise need more than `MAX_SHARDS` shards.
 */
export function shardPlan(tickers: number, shardSize: number = DEFAULT_SHARD_SIZE): { shards: number; size: number } {
  if (!Number.isSafeInteger(shardSize) || shardSize < 1 || shardSize > MAX_SHARD_SIZE) {
    throw new PayloadError('shardSize', `Expected integer in 1..${MAX_SHARD_SIZE} for shardSize but received ${String(shardSize)}`);
  }
  const size = Math.max(shardSize, Math.ceil(tickers / MAX_SHARDS));
  return { shards: Math.max(1, Math.ceil(tickers / size)), size };
}

/**
 * Enqueues one run: report ← route × S shards ← fetch × the shard's tickers. Each route job waits only for its own
 * shard's fetch jobs, so routing overlaps the fetching of the other shards, and no parent has more than
 * `MAX_SHARD_SIZE` children. The run is added as S + 1 flows, not one: first the report with its gate (a delayed
 * child that keeps it waiting), then one flow per shard, attached to the report, then the gate is removed. The first
 * fetch jobs can start while later shards are still being added, and the enqueuing process holds one shard's jobs at
 * a time instead of the run's (one flow of 100,000 tickers took 1.5 GB and 50 s before the first fetch could start).
 * The run id is a fresh UUID (never user text), so report folders and keys cannot be steered by input. Payloads are
 * validated here exactly as workers will.
 */
export interface EnqueueOptions {
  /**
   * Run id to use instead of a fresh one (scheduled runs derive it from their tick). Enqueueing the same id again
   * keeps the existing metadata and adds only what is missing (a run whose enqueue was cut short is completed; one
   * past its enqueue is left alone): one run, not two.
   */
  runId?: string;
}

export async function enqueueRun(ctx: EnqueueContext, req: RunRequest, opts: EnqueueOptions = {}): Promise<EnqueuedRun> {
  const tickers = canonicalTickers(req.tickers);
  const range = validateRange(req.range);
  if (opts.runId !== undefined && !isRunId(opts.runId)) throw new PayloadError('runId', `Expected run id (lower-case UUID) for runId but received ${JSON.stringify(opts.runId)}`);
  const runId = opts.runId ?? randomUUID();
  const createdAt = new Date().toISOString();
  const dataDir = req.dataDir === undefined ? undefined : path.resolve(req.dataDir);

  const fetchData = (ticker: string): FetchJobData => {
    const d: FetchJobData = { runId, ticker, source: req.source, range };
    if (dataDir !== undefined) d.dataDir = dataDir;
    if (req.seed !== undefined) d.seed = req.seed;
    return validateFetchJobData(d);
  };
  // Checked before anything is written, so that a bad request fails whole, not a shard halfway through: the tickers
  // by canonicalTickers above, the rest of a fetch payload (the same for every ticker) here, once.
  fetchData(tickers[0]!);
  const plan = shardPlan(tickers.length, ctx.shardSize);
  const routeData = (shard: number): RouteJobData => validateRouteJobData({ runId, shard, tickers: tickers.slice(shard * plan.size, (shard + 1) * plan.size) });
  const reportData: ReportJobData = validateReportJobData({ runId, source: req.source, createdAt, shards: plan.shards, shardSize: plan.size });
  const reportJobId = jobIds.report(runId);
  const done: EnqueuedRun = { runId, tickers, createdAt, reportJobId, shards: plan.shards };

  const store: RunStore = { redis: ctx.redis, prefix: ctx.prefix, ttlSeconds: ctx.runTtlSeconds };
  const routeQueue = new Queue(QUEUE_NAMES.route, { connection: ctx.redis, prefix: ctx.prefix });
  try {
    let resume = false;
    if (opts.runId !== undefined && (await runExists(store, runId))) {
      if ((await ctx.redis.exists(bullJobKey(ctx.prefix, QUEUE_NAMES.report, reportJobId))) === 1) {
        // Past its enqueue once the gate is gone (or ran out): adding shards again could re-create finished, trimmed jobs.
        const gate = await Job.fromId(routeQueue, jobIds.gate(runId));
        if (gate === undefined || !(await gate.isDelayed())) return done;
        resume = true;
        await reopenAfterEnqueueFailure(store, runId);
      }
    } else {
      await createRunMeta(store, { runId, source: req.source, tickers, createdAt, shards: plan.shards });
    }
    try {
      if (!resume) {
        await ctx.flow.add({
          name: 'report',
          queueName: QUEUE_NAMES.report,
          data: reportData,
          opts: { ...REPORT_JOB_OPTIONS, jobId: reportJobId },
          children: [{ name: GATE_JOB_NAME, queueName: QUEUE_NAMES.route, data: { runId }, opts: { ...GATE_JOB_OPTIONS, jobId: jobIds.gate(runId) } }],
        });
      }
      const parent = { id: reportJobId, queue: `${ctx.prefix}:${QUEUE_NAMES.report}` };
      for (let shard = 0; shard < plan.shards; shard++) {
        const routeJobId = jobIds.route(runId, shard);
        if (resume && (await ctx.redis.exists(bullJobKey(ctx.prefix, QUEUE_NAMES.route, routeJobId))) === 1) continue;
        const data = routeData(shard);
        await ctx.flow.add({
          name: 'route',
          queueName: QUEUE_NAMES.route,
          data,
          opts: { ...ROUTE_JOB_OPTIONS, jobId: routeJobId, parent },
          children: data.tickers.map((ticker) => ({
            name: 'fetch',
            queueName: QUEUE_NAMES.fetch,
            data: fetchData(ticker),
            opts: { ...FETCH_JOB_OPTIONS, jobId: jobIds.fetch(runId, ticker) },
          })),
        });
      }
      // Every shard is in: the gate goes (removing a child releases its parent's wait for it), so the report runs once
      // the shards are done. A gate that is no longer delayed has run out its delay and completes on a route worker.
      const gate = await Job.fromId(routeQueue, jobIds.gate(runId));
      if (gate !== undefined && (await gate.isDelayed())) await gate.remove();
    } catch (err) {
      await updateRunMeta(store, runId, { status: 'failed', error: `${ENQUEUE_FAILED}${errorText(err)}` });
      throw err;
    }
  } finally {
    await routeQueue.close();
  }
  return done;
}
