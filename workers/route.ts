import { performance } from 'node:perf_hooks';
import type { Job } from 'bullmq';
import type { RedisClient } from '../jobs/connection.js';
import type { Logger } from 'pino';
import { NUM_DOMAINS, domainIndex } from '../src/domains.js';
import { decodeFeatureSeries } from '../src/data/features/block.js';
import type { FeatureSeries } from '../src/data/types.js';
import { concatSeries } from '../src/router/batch.js';
import { loadModel } from '../src/router/model.js';
import { EnsembleRouter } from '../src/router/ensemble.js';
import { temperBatchByHistory, type TokenTemperatures } from '../src/router/history-temperature.js';
import { featureEffects, meanInput, topReasons, type AttributionInput } from '../src/router/attribution.js';
import { FEATURE_TABLE } from '../src/data/features/table.js';
import { routerBackendChoice, type BackendName } from '../src/config.js';
import type { FailedTicker, TickerSeries, TickerSummary } from '../src/report/types.js';
import { featureKey, shardKey, tickerFromFetchJobKey } from '../jobs/keys.js';
import { dailyAggregate } from '../src/report/daily.js';
import { summarizeTicker, tickerSeries, type RoutedTicker } from './aggregate.js';
import { storeShardOutput, type RunStore } from '../jobs/run-meta.js';
import { GATE_JOB_NAME } from '../jobs/job-options.js';
import {
  validateFetchResult,
  validateRouteJobData,
  validateShardOutput,
  type FetchResult,
  type RouteResult,
  type ShardOutput,
} from '../jobs/payloads.js';
import { errorText } from '../src/util/errors.js';
import { boundedReason, enterRunStage, StrayJobError, validPayload } from './job.js';

export interface LoadedRouter {
  /** The model's routers: one, or an ensemble's members behind one forward. */
  router: EnsembleRouter;
  /** Where the weights came from; `members` when the model is an ensemble of several routers. */
  model: { path: string; hidden: number; featureSpec: string; members?: number };
  /**
   * The model's history temperature κ and context temperature λ: the probabilities of short histories and of tokens
   * without their context series are re-tempered after each forward.
   */
  temperatures: TokenTemperatures;
}

/** Loads the model and creates the native router (one per member) a route worker keeps for its whole life. */
export async function openRouter(modelPath: string, backend: BackendName): Promise<LoadedRouter> {
  const choice = routerBackendChoice(backend);
  const m = await loadModel(modelPath);
  const router = new EnsembleRouter(m.members, m.temperature, { hidden: m.hidden, backend: choice });
  const model = { path: modelPath, hidden: m.hidden, featureSpec: m.metadata.feature_spec ?? 'unknown', ...(m.members.length > 1 ? { members: m.members.length } : {}) };
  return { router, model, temperatures: { historyTemperature: m.historyTemperature, contextTemperature: m.contextTemperature } };
}

export interface RouteDeps {
  redis: RedisClient;
  prefix: string;
  featureTtlSeconds: number;
  runTtlSeconds: number;
  loaded: LoadedRouter;
  logger: Logger;
}

interface Loaded {
  fetched: FetchResult;
  series: FeatureSeries;
}


/** Children of the route job: fetch results and, for tickers that failed for good, their reasons. */
async function collectChildren(job: Job<unknown>, tickers: readonly string[]) {
  const values = await job.getChildrenValues<unknown>();
  const ignored = await job.getIgnoredChildrenFailures();
  const results = new Map<string, FetchResult>();
  const failed = new Map<string, string>();
  for (const [jobKey, value] of Object.entries(values)) {
    try {
      const r = validateFetchResult(value, `result of ${jobKey}`);
      results.set(r.ticker, r);
    } catch (err) {
      const t = tickerFromFetchJobKey(jobKey);
      if (t !== undefined) failed.set(t, boundedReason(`BAD_RESULT: ${errorText(err)}`));
    }
  }
  for (const [jobKey, reason] of Object.entries(ignored)) {
    // Bounded again here: a fetch worker of an older release stored its reason whole.
    failed.set(tickerFromFetchJobKey(jobKey) ?? jobKey, boundedReason(reason || 'failed without a reason'));
  }
  for (const t of tickers) {
    if (!results.has(t) && !failed.has(t)) failed.set(t, 'MISSING: the fetch stage returned nothing for this ticker');
  }
  return { results, failed };
}

/** Reads and decodes the feature blocks; tickers whose block expired or does not match the model fail alone. */
async function readBlocks(redis: RedisClient, results: Map<string, FetchResult>, hidden: number, failed: Map<string, string>): Promise<Loaded[]> {
  const list = [...results.values()];
  if (list.length === 0) return [];
  const blocks = await redis.mgetBuffer(...list.map((r) => r.key));
  const out: Loaded[] = [];
  list.forEach((fetched, i) => {
    const b = blocks[i];
    if (b === null || b === undefined) {
      failed.set(fetched.ticker, `EXPIRED: feature block ${fetched.key} is gone (TTL passed before routing)`);
      return;
    }
    try {
      const series = decodeFeatureSeries(b);
      if (series.hidden !== hidden) {
        failed.set(fetched.ticker, `BAD_BLOCK: Expected hidden ${hidden} for features but received ${series.hidden}`);
      } else if (series.dates.length === 0) {
        failed.set(fetched.ticker, 'NO_DATA: no routed days');
      } else {
        out.push({ fetched, series });
      }
    } catch (err) {
      failed.set(fetched.ticker, boundedReason(`BAD_BLOCK: ${errorText(err)}`));
    }
  });
  return out;
}

/** What a completed gate job returns. */
export interface GateResult {
  gate: true;
  runId: string;
}

/** The job's return value: the output's key, counts and the timings dashboards read. */
function routeResult(o: ShardOutput, outputKey: string): RouteResult {
  return {
    runId: o.runId,
    shard: o.shard,
    outputKey,
    routed: o.tickers.length,
    failed: o.failed.length,
    backend: o.backend,
    tokens: o.tokens,
    fetchMs: o.fetchMs,
    routeMs: o.routeMs,
    forwardMs: o.forwardMs,
  };
}

/** The shard's output already stored by an earlier attempt of this job, or undefined (none, or not readable). */
async function storedOutput(deps: RouteDeps, key: string, runId: string, shard: number): Promise<ShardOutput | undefined> {
  const raw = await deps.redis.get(key);
  if (raw === null) return undefined;
  try {
    const o = validateShardOutput(JSON.parse(raw), `shard output ${key}`);
    if (o.runId === runId && o.shard === shard) return o;
    deps.logger.warn({ key, runId, shard }, 'stored shard output names another shard; routing the shard again');
  } catch (err) {
    deps.logger.warn({ key, err }, 'stored shard output is unreadable; routing the shard again');
  }
  return undefined;
}

/**
 * Route stage, one shard of a run: every ticker-day of the shard in ONE forward pass of the held router, aggregated
 * per ticker and per day, stored as the shard's output for the report (`ShardOutput`), and the shard's feature
 * blocks dropped. A shard whose tickers all failed still succeeds here (with zero tickers) so the report can list
 * the failures.
 */
export function createRouteProcessor(deps: RouteDeps): (job: Job<unknown>) => Promise<RouteResult | GateResult> {
  const { router, model } = deps.loaded;
  const store: RunStore = { redis: deps.redis, prefix: deps.prefix, ttlSeconds: deps.runTtlSeconds };

  return async (job: Job<unknown>) => {
    // The report's gate (enqueue-run.ts) only has to finish; it carries no work.
    if (job.name === GATE_JOB_NAME) return { gate: true, runId: String((job.data as { runId?: unknown } | null)?.runId) };
    const t0 = performance.now();
    const data = validPayload(job, 'route', validateRouteJobData);
    // Logged before any work: operators (and the crash tests) can tell a route job that started from one that waits.
    deps.logger.info({ runId: data.runId, shard: data.shard, jobId: job.id, attempt: job.attemptsMade + 1 }, 'routing started');
    // Before anything is read or written: a stray job must leave a finished run exactly as it was.
    await enterRunStage(store, job, data.runId, 'route', data.shard);
    const fetchMs = Math.max(0, (job.processedOn ?? Date.now()) - job.timestamp);
    const outputKey = shardKey(deps.prefix, data.runId, data.shard);
    // An attempt that died after storing its output (and dropping the feature blocks) left the answer: it stands.
    const earlier = await storedOutput(deps, outputKey, data.runId, data.shard);
    if (earlier !== undefined) return routeResult(earlier, outputKey);

    const { results, failed } = await collectChildren(job, data.tickers);
    const loaded = await readBlocks(deps.redis, results, router.hidden, failed);

    const H = router.hidden;
    const { x, vol, risk, offsets } = concatSeries(loaded.map((l) => l.series), H);
    const n = offsets[offsets.length - 1]!;

    let forwardMs = 0;
    const summaries: TickerSummary[] = [];
    const series: TickerSeries[] = [];
    if (n > 0) {
      const f0 = performance.now();
      const out = await router.forward({ x, vol, risk });
      temperBatchByHistory(out.probs, x, H, deps.loaded.temperatures, n);
      forwardMs = performance.now() - f0;
      let start = 0;
      const byTicker = new Map<string, RoutedTicker>();
      const means = new Map<string, Omit<AttributionInput, 'domain'>>();
      for (const { fetched, series: s } of loaded) {
        const days = s.dates.length;
        const slice: RoutedTicker = {
          ticker: fetched.ticker,
          dates: s.dates,
          vol: s.vol,
          ret: s.ret,
          probs: out.probs.subarray(start * NUM_DOMAINS, (start + days) * NUM_DOMAINS),
          assign: out.assign.subarray(start, start + days),
        };
        if (fetched.class !== undefined) slice.class = fetched.class;
        if (fetched.subtype !== undefined) slice.subtype = fetched.subtype;
        if (fetched.requestedDays !== undefined) slice.requestedDays = fetched.requestedDays;
        slice.quality = fetched.quality;
        byTicker.set(fetched.ticker, slice);
        means.set(fetched.ticker, meanInput({ x, vol, risk }, H, start, days));
        start += days;
      }
      for (const t of data.tickers) {
        const slice = byTicker.get(t);
        if (slice === undefined) continue;
        summaries.push(summarizeTicker(slice));
        series.push(tickerSeries(slice));
      }
      // A reason for every route: one more forward call of (H + 1) tokens per ticker.
      const inputs: AttributionInput[] = summaries.map((s) => ({ ...means.get(s.ticker)!, domain: domainIndex(s.domain) }));
      const effects = await featureEffects((b) => router.forward(b), H, inputs);
      const names = FEATURE_TABLE.map((f) => f.name);
      summaries.forEach((s, i) => (s.reasons = topReasons(effects[i]!, inputs[i]!.x, names)));
    }

    const failedList: FailedTicker[] = data.tickers.filter((t) => failed.has(t)).map((t) => ({ ticker: t, reason: failed.get(t)! }));
    // Failures keyed by something other than a run ticker (unparsable job keys) are still reported.
    for (const [k, reason] of failed) if (!data.tickers.includes(k)) failedList.push({ ticker: k, reason });

    const contextMissing = [...new Set(loaded.flatMap((l) => l.fetched.contextMissing ?? []))].sort();
    const output: ShardOutput = {
      runId: data.runId,
      shard: data.shard,
      tickers: summaries,
      failed: failedList,
      daily: dailyAggregate(series),
      backend: router.backend,
      model,
      tokens: n,
      fetchMs,
      routeMs: 0,
      forwardMs,
      contextMissing,
    };
    output.routeMs = performance.now() - t0;
    const ended = await storeShardOutput(store, data.runId, outputKey, JSON.stringify(output), deps.featureTtlSeconds);
    if (ended !== undefined) throw new StrayJobError(`Expected run ${data.runId} to be in progress for its route job but it is ${ended}`);
    // Each block is read once, here: dropping the shard's blocks now bounds Redis to the shards still in flight rather
    // than every block of the run until its report.
    await deps.redis.unlink(...data.tickers.map((t) => featureKey(deps.prefix, data.runId, t)));
    deps.logger.info(
      { runId: data.runId, shard: data.shard, tickers: summaries.length, failed: failedList.length, tokens: n, forwardMs, routeMs: output.routeMs },
      'routed',
    );
    return routeResult(output, outputKey);
  };
}
