import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { UnrecoverableError, type Job } from 'bullmq';
import type { RedisClient } from '../jobs/connection.js';
import type { Piscina } from 'piscina';
import type { Logger } from 'pino';
import { CONTEXT_TICKERS } from '../src/data/features/context.js';
import { buildSummaryMarkdown, prepareSummaryJson, renderFigures, summaryJson, warmRenderPool } from '../src/report/index.js';
import { compareRuns, routingMix, runRecord, universeId } from '../src/report/drift.js';
import { REPORT_FILES, type DailyAggregate, type FailedTicker, type ReportInput, type RunSummary, type TickerSummary } from '../src/report/types.js';
import { featureKey, isRunId, jobIds, runKey, shardFromRouteJobKey, shardKey } from '../jobs/keys.js';
import { failRun, readRunTickers, updateRunMeta, type RunStore } from '../jobs/run-meta.js';
import { previousUniverseRun, recordUniverseRun } from './universe-history.js';
import { readShard, ShardMerge } from './shard-merge.js';
import type { ShardPrefetch } from './shard-prefetch.js';
import {
  validateReportJobData,
  validateRunTickers,
  type ReportJobData,
  type ReportResult,
  type ShardOutput,
} from '../jobs/payloads.js';
import { errorText } from '../src/util/errors.js';
import { boundedError, boundedReason, enterRunStage, isFinalAttempt, StrayJobError, validPayload } from './job.js';

export interface ReportDeps {
  redis: RedisClient;
  prefix: string;
  runTtlSeconds: number;
  reportsDir: string;
  /** Model file the route workers are configured with; named in the report when routing itself failed. */
  modelPath: string;
  /** Pool from `createRenderPool`. */
  pool: Piscina;
  /** Lifetime of a universe's run history (drift baseline). @defaultValue `HISTORY_TTL_SECONDS` (35 days) */
  historyTtlSeconds?: number;
  /** Shards merged ahead while runs are routed; without one, a report job merges every shard itself. */
  prefetch?: ShardPrefetch;
  logger: Logger;
}


/** The run's shards merged: per-ticker rows in request order, per-day sums, and what the route jobs reported. */
interface MergedShards {
  tickers: TickerSummary[];
  failed: FailedTicker[];
  daily: DailyAggregate;
  backend: string;
  model: RouteModel;
  tokens: number;
  /** Longest enqueue-to-route-start of the shards: the fetch stage of the shard that waited longest. */
  fetchMs: number;
  /** The shards' route jobs, summed: the route stage's work, however it overlapped the fetching. */
  routeMs: number;
  forwardMs: number;
  contextMissing: string[];
  /** Shards that were merged ahead by the prefetch (0 when it had none, or they were merged again). */
  shardsAhead: number;
}

type RouteModel = ShardOutput['model'];

/**
 * The run's ticker list from its hash (it is not in the report's payload: up to `MAX_TICKERS` tickers), checked, and
 * checked against the payload's shards. Every problem is permanent.
 */
async function runTickers(redis: RedisClient, prefix: string, data: ReportJobData): Promise<string[]> {
  let raw: unknown;
  try {
    raw = await readRunTickers(redis, prefix, data.runId);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    throw new UnrecoverableError(`BAD_RUN: the ticker list in ${runKey(prefix, data.runId)} is not JSON: ${errorText(err)}`);
  }
  if (raw === undefined) {
    throw new UnrecoverableError(`RUN_GONE: run ${data.runId} has no hash ${runKey(prefix, data.runId)} (RUN_TTL_SECONDS passed?); the report reads the run's tickers from it`);
  }
  let tickers: string[];
  try {
    tickers = validateRunTickers(raw, `tickers of ${runKey(prefix, data.runId)}`);
  } catch (err) {
    throw new UnrecoverableError(`BAD_RUN: ${errorText(err)}`);
  }
  const shards = Math.ceil(tickers.length / data.shardSize);
  if (shards !== data.shards) {
    throw new UnrecoverableError(`BAD_RUN: Expected ${shards} shards for ${tickers.length} tickers in shards of ${data.shardSize} but received ${data.shards}`);
  }
  return tickers;
}

/**
 * Merges the run's shards in shard order, going on from `ahead` (the shards a `ShardPrefetch` merged while the run was
 * being routed) or from the first. The report holds the per-ticker rows of the whole run but the per-day data of none:
 * its per-day sums have one entry per date of the run. A shard without output lists its tickers as failed, with its
 * route job's reason when the job failed for good.
 */
async function mergeShards(job: Job<unknown>, deps: ReportDeps, data: ReportJobData, tickers: readonly string[], ahead?: ShardMerge): Promise<MergedShards> {
  // Read once, and only when a shard has no output (the reasons of route jobs that failed for good).
  let routeFailures: Map<number, string> | undefined;
  const failureOf = async (shard: number) => {
    if (routeFailures === undefined) {
      routeFailures = new Map();
      for (const [jobKey, reason] of Object.entries(await job.getIgnoredChildrenFailures())) {
        const s = shardFromRouteJobKey(jobKey);
        if (s !== undefined) routeFailures.set(s, reason);
      }
    }
    return routeFailures.get(shard);
  };
  // Outputs never change once stored, but one may be gone since it was merged ahead (TTL): then that shard's tickers
  // fail as EXPIRED, as they would have without the prefetch, so the merge starts over.
  let acc = new ShardMerge();
  if (ahead !== undefined && ahead.next > 0 && ahead.next <= data.shards) {
    const keys = Array.from({ length: ahead.next }, (_, shard) => shardKey(deps.prefix, data.runId, shard));
    if ((await deps.redis.exists(...keys)) === keys.length) acc = ahead;
  }
  const from = acc.next;
  for (let shard = from; shard < data.shards; shard++) {
    const key = shardKey(deps.prefix, data.runId, shard);
    const out = await readShard(deps.redis, key, data.runId, shard);
    if (out === undefined) {
      const reason = await failureOf(shard);
      const why = boundedReason(
        reason !== undefined
          ? `ROUTE_FAILED: ${reason || 'the route stage returned nothing'}`
          : `EXPIRED: the output of shard ${shard} (${key}) is gone (TTL passed before reporting)`,
      );
      acc.addMissing(tickers.slice(shard * data.shardSize, (shard + 1) * data.shardSize), why);
      continue;
    }
    acc.add(out);
  }
  return {
    tickers: acc.tickers,
    failed: acc.failed,
    daily: acc.daily,
    backend: acc.backends.size > 0 ? [...acc.backends].join(', ') : 'none',
    model: acc.model ?? { path: deps.modelPath, hidden: 0, featureSpec: 'unknown' },
    tokens: acc.tokens,
    fetchMs: acc.outputs === 0 ? Math.max(0, (job.processedOn ?? Date.now()) - job.timestamp) : acc.fetchMs,
    routeMs: acc.routeMs,
    forwardMs: acc.forwardMs,
    contextMissing: [...acc.contextMissing].sort(),
    shardsAhead: from,
  };
}

/** Keys deleted per command when a run's keys are removed (one `UNLINK` of 100,000 arguments would block Redis). */
const DELETE_CHUNK = 1_000;

async function deleteKeys(redis: RedisClient, keys: readonly string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += DELETE_CHUNK) await redis.unlink(...keys.slice(i, i + DELETE_CHUNK));
}

/**
 * Report stage: four PNGs + summary.json + summary.md in `REPORTS_DIR/<runId>/`, then the run's Redis blocks are
 * deleted. Also runs when routing failed, so every run ends with a report that says what happened.
 */
export function createReportProcessor(deps: ReportDeps): (job: Job<unknown>) => Promise<ReportResult> {
  const store: RunStore = { redis: deps.redis, prefix: deps.prefix, ttlSeconds: deps.runTtlSeconds };
  // Warm the render threads now, while the run's tickers are still being fetched; a failure here only costs the
  // first report its speed, so it is logged and the job renders anyway.
  const warming = warmRenderPool(deps.pool).then(
    (ms) => deps.logger.debug({ ms: Math.round(ms) }, 'render pool warm'),
    (err: unknown) => deps.logger.warn({ err }, 'render pool warm-up failed'),
  );

  async function run(job: Job<unknown>, signal?: AbortSignal): Promise<ReportResult> {
    const t0 = performance.now();
    // Where the job's time goes, in the 'report written' log line (bench:pipeline shows it in its tail timeline).
    const phasesMs: Record<string, number> = {};
    let tPhase = t0;
    const phase = (name: string) => {
      const now = performance.now();
      phasesMs[name] = Math.round(now - tPhase);
      tPhase = now;
    };
    const data = validPayload(job, 'report', validateReportJobData);
    // Before anything is read or written: a stray job must leave a finished run and its report folder as they were.
    await enterRunStage(store, job, data.runId, 'report');
    await warming;
    phase('enter');
    const tickers = await runTickers(deps.redis, deps.prefix, data);
    phase('tickers');
    // Taken only now, past the stage check: a stray job must not take a run's prefetched shards.
    const route = await mergeShards(job, deps, data, tickers, await deps.prefetch?.take(data.runId));
    phase('merge');
    // The universe is what was asked for (source and ticker set), not what happened to succeed, so a run with a
    // failed ticker is still compared with the runs of its schedule.
    const universe = universeId(data.source, tickers);
    const previous = await previousUniverseRun(deps.redis, deps.prefix, universe, data.runId, data.createdAt);
    phase('previous');

    const summary: RunSummary = {
      runId: data.runId,
      source: data.source,
      createdAt: data.createdAt,
      finishedAt: new Date().toISOString(),
      tickers: route.tickers,
      failed: route.failed,
      backend: route.backend,
      model: route.model,
      timings: { fetchMs: Math.round(route.fetchMs), routeMs: Math.round(route.routeMs), reportMs: 0, totalMs: 0 },
      tokens: route.tokens,
      universe,
      routing: routingMix(route.tickers),
      drift: previous && route.tickers.length > 0 ? compareRuns(universe, route.tickers, previous) : null,
      context: { set: [...CONTEXT_TICKERS], missing: route.contextMissing },
    };
    const input: ReportInput = { summary, series: [], daily: route.daily };
    // The run id is a validated UUID, so the folder cannot escape REPORTS_DIR.
    const outDir = path.join(deps.reportsDir, data.runId);
    // summary.json's per-ticker rows (nearly all of it) are serialised on this thread while the render threads draw;
    // the file is written once, when the timings are known.
    let finalJson: ((final: RunSummary) => string) | undefined;
    const figures = await renderFigures(input, outDir, { pool: deps.pool, whileRendering: () => (finalJson = prepareSummaryJson(summary)) });
    phase('render');
    // Handed back at shutdown while rendering: another worker redoes the job, and this one's Redis is closing.
    if (signal?.aborted) throw new Error('report job handed back at shutdown');

    // Timings are only known once rendering is done: the summary files are written with them.
    const finished = new Date();
    summary.finishedAt = finished.toISOString();
    summary.timings.reportMs = Math.round(performance.now() - t0);
    summary.timings.totalMs = Math.max(0, finished.getTime() - Date.parse(data.createdAt));
    const jsonPath = path.join(outDir, REPORT_FILES.summaryJson);
    const mdPath = path.join(outDir, REPORT_FILES.summaryMd);
    await Promise.all([
      writeFile(jsonPath, finalJson ? finalJson(summary) : summaryJson(summary)),
      writeFile(mdPath, buildSummaryMarkdown(summary)),
    ]);
    const files = [...figures, jsonPath, mdPath];
    phase('summaries');

    const routed = summary.tickers.length;
    // Only runs that routed something become the baseline of the next run; an outage must not look like drift.
    if (routed > 0) {
      const record = runRecord(data.runId, data.createdAt, summary.finishedAt, summary.tickers);
      await recordUniverseRun(deps.redis, deps.prefix, universe, record, deps.historyTtlSeconds);
    }
    await updateRunMeta(store, data.runId, {
      status: routed > 0 ? 'finished' : 'failed',
      routed,
      failedTickers: summary.failed.length,
      backend: summary.backend,
      reportDir: outDir,
      finishedAt: summary.finishedAt,
      ...(routed > 0 ? {} : { error: 'no ticker could be routed (see the report for each reason)' }),
    });
    // The route jobs dropped the blocks they read; a shard whose route job failed for good left its blocks behind.
    const shards = Array.from({ length: data.shards }, (_, i) => shardKey(deps.prefix, data.runId, i));
    await deleteKeys(deps.redis, [...shards, ...tickers.map((t) => featureKey(deps.prefix, data.runId, t))]);
    phase('finish');
    deps.logger.info({ runId: data.runId, outDir, routed, failed: summary.failed.length, timings: summary.timings, phasesMs, shardsAhead: route.shardsAhead }, 'report written');
    return { reportDir: outDir, files, routed, failed: summary.failed.length };
  }

  return async (job: Job<unknown>, _token?: string, signal?: AbortSignal) => {
    try {
      return await run(job, signal);
    } catch (thrown) {
      // A handed-back job's outcome no longer counts: nothing to log or mark, the next worker owns the run.
      if (signal?.aborted) throw thrown;
      const err = boundedError(thrown);
      const final = isFinalAttempt(job, err);
      const runId = (job.data as { runId?: unknown } | undefined)?.runId;
      deps.logger.error({ jobId: job.id, final, err }, 'report failed');
      // Only the run's own report job says how its run ended; a stray one, even a malformed one, leaves it alone.
      if (final && isRunId(runId) && job.id === jobIds.report(runId) && !(err instanceof StrayJobError)) {
        await failRun(store, runId, boundedReason(`report failed: ${errorText(err)}`)).catch((e: unknown) =>
          deps.logger.error({ err: e }, 'could not mark run failed'),
        );
      }
      throw err;
    }
  };
}
