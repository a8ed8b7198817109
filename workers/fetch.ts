import { UnrecoverableError, type Job } from 'bullmq';
import type { RedisClient } from '../jobs/connection.js';
import type { Piscina } from 'piscina';
import type { Logger } from 'pino';
import { SourceError } from '../src/data/errors.js';
import { getBarsCached, type BarCacheOptions } from './bar-cache.js';
import { createSource, DEFAULT_SIM_SEED, type DataSource } from '../src/data/sources/create.js';
import { fetchContext, type FetchedContext } from '../src/data/sources/context-fetch.js';
import type { YahooSourceOptions } from '../src/data/sources/yahoo.js';
import type { DataQuality, SourceName, SourceResult } from '../src/data/types.js';
import type { Domain } from '../src/domains.js';
import type { Hidden } from '../src/router/layout.js';
import { featureKey } from '../jobs/keys.js';
import { bumpRunCounter, type RunStore } from '../jobs/run-meta.js';
import { BlockStore } from './block-store.js';
import { validateFetchJobData, type FetchJobData, type FetchResult } from '../jobs/payloads.js';
import { barsToColumns, type FeatureBatch, type FeatureBatchResult, type FeatureTask, type FeatureTaskResult } from './features.task.js';
import { TaskBatcher } from './task-batcher.js';
import { errorText } from '../src/util/errors.js';
import { boundedError, isFinalAttempt, StrayJobError, validPayload } from './job.js';

export interface FetchDeps {
  redis: RedisClient;
  prefix: string;
  featureTtlSeconds: number;
  runTtlSeconds: number;
  /** Embedding size of the model the route workers hold (from the model file). */
  hidden: Hidden;
  /** Pool running `features.task.ts`. */
  pool: Piscina;
  logger: Logger;
  /** Source factory; tests inject failing sources. @defaultValue `createSource` */
  sourceFactory?: typeof createSource;
  /** Options of the yahoo source (time-out, shared rate limiter, retries). @defaultValue the source's defaults */
  yahoo?: Omit<YahooSourceOptions, 'fetch'>;
  /** Redis bar cache for network sources; without it every job asks the source. @defaultValue none */
  barCache?: BarCacheOptions;
}

/**
 * Sources whose bars are cached in Redis: only network ones. The simulator is cheaper to run than to cache, and a
 * csv folder may be edited between runs.
 */
const CACHED_SOURCES: ReadonlySet<SourceName> = new Set(['yahoo']);

/** Source failures that retrying cannot fix: the ticker or its data is wrong, not the network. */
const PERMANENT: ReadonlySet<string> = new Set(['UNKNOWN_TICKER', 'NO_DATA', 'BAD_DATA']);

/**
 * Fetch stage: bars from the source → features on the pool → binary block in Redis with a TTL. Returns only the
 * key and a small summary; the route job reads the block.
 */
/** The processor takes BullMQ's `(job, token, signal)`; the signal aborts when the job is handed back at shutdown. */
export function createFetchProcessor(deps: FetchDeps): (job: Job<unknown>, token?: string, signal?: AbortSignal) => Promise<FetchResult> {
  const makeSource = deps.sourceFactory ?? createSource;
  const store: RunStore = { redis: deps.redis, prefix: deps.prefix, ttlSeconds: deps.runTtlSeconds };
  // Blocks that finish together leave together (block-store.ts).
  const blocks = new BlockStore(store, deps.featureTtlSeconds);

  // Sources are reused across jobs of the same kind (the csv source reads its labels file once).
  const sources = new Map<string, DataSource>();
  function sourceFor(data: FetchJobData): DataSource {
    const id = JSON.stringify([data.source, data.dataDir ?? null, data.seed ?? null]);
    let src = sources.get(id);
    if (src === undefined) {
      if (sources.size >= 32) sources.clear();
      const opts: Parameters<typeof createSource>[0] = { source: data.source };
      if (data.dataDir !== undefined) opts.dataDir = data.dataDir;
      if (data.seed !== undefined) opts.seed = data.seed;
      if (deps.yahoo !== undefined) opts.yahoo = deps.yahoo;
      src = makeSource(opts);
      sources.set(id, src);
    }
    return src;
  }

  /** Bars of one ticker: through the Redis cache for network sources. Permanent source errors end the job at once. */
  async function loadBars(data: FetchJobData): Promise<SourceResult> {
    const src = sourceFor(data);
    try {
      if (deps.barCache !== undefined && CACHED_SOURCES.has(data.source)) return await getBarsCached(deps.barCache, src, data.ticker, data.range);
      return await src.fetch(data.ticker, data.range);
    } catch (err) {
      if (err instanceof SourceError && PERMANENT.has(err.code)) throw new UnrecoverableError(`${err.code}: ${err.message}`);
      throw err;
    }
  }

  // The context set is fetched once per run and source in this process (through the bar cache for network
  // sources, so once per day across runs and workers), then shared by all the run's tickers: every ticker of a run
  // is compared with the same reference series. A missing member degrades features, never fails a ticker.
  const contexts = new Map<string, Promise<FetchedContext>>();
  function contextFor(data: FetchJobData): Promise<FetchedContext> {
    const id = JSON.stringify([data.runId, data.source, data.dataDir ?? null, data.seed ?? null, data.range]);
    let ctx = contexts.get(id);
    if (ctx === undefined) {
      if (contexts.size >= 16) contexts.delete(contexts.keys().next().value as string);
      const src = sourceFor(data);
      const cache = deps.barCache;
      const through: DataSource =
        cache !== undefined && CACHED_SOURCES.has(data.source) ? { name: src.name, fetch: (t, r) => getBarsCached(cache, src, t, r) } : src;
      ctx = fetchContext([{ label: data.source, source: through }], data.range);
      contexts.set(id, ctx);
      void ctx.then((c) => {
        if (c.missing.length > 0) deps.logger.warn({ runId: data.runId, missing: c.missing }, 'context series missing; features degrade');
      });
    }
    return ctx;
  }

  // Feature tasks go to the pool in batches while its threads are busy (task-batcher.ts): one hand-over per batch.
  const batcher = new TaskBatcher<FeatureTask, FeatureTaskResult>({
    slots: deps.pool.maxThreads,
    runBatch: async (batch, transferList) => ((await deps.pool.run({ batch } satisfies FeatureBatch, { transferList })) as FeatureBatchResult).outcomes,
  });

  async function runTask(task: FeatureTask, transferList: ArrayBuffer[] = []): Promise<FeatureTaskResult> {
    try {
      return await batcher.run(task, transferList);
    } catch (err) {
      // Feature computation is deterministic: the same bars fail the same way on every attempt.
      throw new UnrecoverableError(`FEATURES: ${errorText(err)}`);
    }
  }

  /**
   * Features of one ticker as an encoded block. Simulated bars are made on the pool thread next to the features
   * (the default source factory only: an injected one cannot cross threads); other sources fetch here and hand the
   * bars over as transferred columns.
   */
  async function features(
    data: FetchJobData,
  ): Promise<{ block: Uint8Array; days: number; meta: { quality: DataQuality; class?: Domain; subtype?: string }; ctx: FetchedContext }> {
    if (data.source === 'sim' && deps.sourceFactory === undefined) {
      const ctx = await contextFor(data);
      const res = await runTask({
        ticker: data.ticker,
        hidden: deps.hidden,
        context: ctx.context,
        sim: { seed: data.seed ?? DEFAULT_SIM_SEED, range: data.range },
      });
      if ('sourceError' in res) {
        const e = new SourceError(res.sourceError.code, data.ticker, res.sourceError.message);
        if (PERMANENT.has(e.code)) throw new UnrecoverableError(`${e.code}: ${e.message}`);
        throw e;
      }
      return { block: res.block, days: res.days, meta: res.source ?? { quality: { nulls: 0, duplicates: 0, gaps: 0, reordered: 0 } }, ctx };
    }
    const result = await loadBars(data);
    const ctx = await contextFor(data);
    const columns = barsToColumns(result.bars);
    const res = await runTask({ ticker: data.ticker, hidden: deps.hidden, context: ctx.context, bars: columns, days: data.range.days }, [columns.values.buffer as ArrayBuffer]);
    if ('sourceError' in res) throw new UnrecoverableError(`FEATURES: unexpected source error ${res.sourceError.message}`);
    const meta: { quality: DataQuality; class?: Domain; subtype?: string } = { quality: result.quality };
    if (result.class !== undefined) meta.class = result.class;
    if (result.subtype !== undefined) meta.subtype = result.subtype;
    return { block: res.block, days: res.days, meta, ctx };
  }

  async function run(job: Job<unknown>): Promise<FetchResult> {
    const data = validPayload(job, 'fetch', validateFetchJobData);
    const { block: raw, days, meta, ctx } = await features(data);
    if (days === 0) throw new UnrecoverableError(`NO_DATA: no routed days for ${data.ticker} after the feature warm-up`);
    const key = featureKey(deps.prefix, data.runId, data.ticker);
    const block = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
    const ended = await blocks.store(data.runId, key, block);
    if (ended !== undefined) throw new StrayJobError(`Expected run ${data.runId} to be in progress for its fetch job but it is ${ended}`);

    const out: FetchResult = { key, ticker: data.ticker, days, requestedDays: data.range.days, quality: meta.quality };
    if (meta.class !== undefined) out.class = meta.class;
    if (meta.subtype !== undefined) out.subtype = meta.subtype;
    if (ctx.missing.length > 0) out.contextMissing = ctx.missing.map((m) => m.ticker);
    return out;
  }

  return async (job: Job<unknown>, _token?: string, signal?: AbortSignal) => {
    const runId = (job.data as { runId?: unknown } | undefined)?.runId;
    try {
      return await run(job);
    } catch (thrown) {
      const err = boundedError(thrown);
      const final = isFinalAttempt(job, err);
      deps.logger.warn({ jobId: job.id, attempt: job.attemptsMade + 1, final, err }, 'fetch failed');
      // A job handed back at shutdown fails here only because its pools are closing; another worker redoes it. A
      // stray job's run has ended and keeps its counts.
      if (final && typeof runId === 'string' && signal?.aborted !== true && !(err instanceof StrayJobError)) {
        // Progress counters are cosmetic; losing one must not replace the job's real error.
        await bumpRunCounter(store, runId, 'fetchFailed').catch((e: unknown) => deps.logger.error({ err: e }, 'could not count fetch failure'));
      }
      throw err;
    }
  };
}
