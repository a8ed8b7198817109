import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { UnrecoverableError, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Piscina } from 'piscina';
import type { Logger } from 'pino';
import { CONTEXT_TICKERS } from '../src/data/features/context.js';
import { buildSummaryMarkdown, renderReports, warmRenderPool } from '../src/report/index.js';
import { compareRuns, routingMix, runRecord, universeId } from '../src/report/drift.js';
import { REPORT_FILES, type ReportInput, type RunSummary, type TickerSeries } from '../src/report/types.js';
import { featureKey, isRunId, jobIds, seriesKey } from '../jobs/keys.js';
import { decodeSeriesBlock } from './series-block.js';
import { failRun, updateRunMeta, type RunStore } from '../jobs/run-meta.js';
import { previousUniverseRun, recordUniverseRun } from './universe-history.js';
import {
  validateReportJobData,
  validateRouteResult,
  type ReportJobData,
  type ReportResult,
  type RouteResult,
} from '../jobs/payloads.js';
import { errorText } from '../src/util/errors.js';
import { boundedError, boundedReason, enterRunStage, isFinalAttempt, StrayJobError, validPayload } from './job.js';

export interface ReportDeps {
  redis: Redis;
  prefix: string;
  runTtlSeconds: number;
  reportsDir: string;
  /** Model file the route workers are configured with; named in the report when routing itself failed. */
  modelPath: string;
  /** Pool from `createRenderPool`. */
  pool: Piscina;
  /** Lifetime of a universe's run history (drift baseline). @defaultValue `HISTORY_TTL_SECONDS` (35 days) */
  historyTtlSeconds?: number;
  logger: Logger;
}


/** The route job's result, or a stand-in listing every ticker as failed when routing failed for good. */
async function routeOutcome(job: Job<unknown>, data: ReportJobData, modelPath: string): Promise<RouteResult> {
  const values = Object.values(await job.getChildrenValues<unknown>());
  if (values.length > 0) return validateRouteResult(values[0]);
  const reasons = Object.values(await job.getIgnoredChildrenFailures());
  const why = boundedReason(`ROUTE_FAILED: ${reasons[0] ?? 'the route stage returned nothing'}`);
  return {
    runId: data.runId,
    tickers: [],
    failed: data.tickers.map((ticker) => ({ ticker, reason: why })),
    seriesKey: null,
    backend: 'none',
    model: { path: modelPath, hidden: 0, featureSpec: 'unknown' },
    tokens: 0,
    fetchMs: Math.max(0, (job.processedOn ?? Date.now()) - job.timestamp),
    routeMs: 0,
    forwardMs: 0,
  };
}

async function readSeries(redis: Redis, key: string | null): Promise<TickerSeries[]> {
  if (key === null) return [];
  const b = await redis.getBuffer(key);
  if (b === null) throw new UnrecoverableError(`EXPIRED: series block ${key} is gone (TTL passed before reporting)`);
  return decodeSeriesBlock(b);
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
    const data = validPayload(job, 'report', validateReportJobData);
    // Before anything is read or written: a stray job must leave a finished run and its report folder as they were.
    await enterRunStage(store, job, data.runId, 'report');
    await warming;
    const route = await routeOutcome(job, data, deps.modelPath);
    const series = await readSeries(deps.redis, route.seriesKey);
    // The universe is what was asked for (source and ticker set), not what happened to succeed, so a run with a
    // failed ticker is still compared with the runs of its schedule.
    const universe = universeId(data.source, data.tickers);
    const previous = await previousUniverseRun(deps.redis, deps.prefix, universe, data.runId, data.createdAt);

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
      context: { set: [...CONTEXT_TICKERS], missing: route.contextMissing ?? [] },
    };
    const input: ReportInput = { summary, series };
    // The run id is a validated UUID, so the folder cannot escape REPORTS_DIR.
    const outDir = path.join(deps.reportsDir, data.runId);
    const files = await renderReports(input, outDir, { pool: deps.pool });
    // Handed back at shutdown while rendering: another worker redoes the job, and this one's Redis is closing.
    if (signal?.aborted) throw new Error('report job handed back at shutdown');

    // Timings are only known once rendering is done: finish the summary files with them.
    const finished = new Date();
    summary.finishedAt = finished.toISOString();
    summary.timings.reportMs = Math.round(performance.now() - t0);
    summary.timings.totalMs = Math.max(0, finished.getTime() - Date.parse(data.createdAt));
    await writeFile(path.join(outDir, REPORT_FILES.summaryJson), `${JSON.stringify(summary, null, 2)}\n`);
    await writeFile(path.join(outDir, REPORT_FILES.summaryMd), buildSummaryMarkdown(summary));

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
    const keys = [...data.tickers.map((t) => featureKey(deps.prefix, data.runId, t)), seriesKey(deps.prefix, data.runId)];
    await deps.redis.del(...keys);
    deps.logger.info({ runId: data.runId, outDir, routed, failed: summary.failed.length, timings: summary.timings }, 'report written');
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
