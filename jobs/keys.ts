/**
 * Every Redis key of the project and the BullMQ job ids of a run: nothing else builds a key. Run ids are generated UUIDs and tickers pass `validateTicker`
 * (`[A-Z0-9.\-=^]`) before they get here, so neither can contain `:` (the key separator) or `_` (the job id
 * separator): ids and keys parse back unambiguously.
 */

const RUN_ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function isRunId(v: unknown): v is string {
  return typeof v === 'string' && RUN_ID_RE.test(v);
}

/** Hash with the run's status and progress: `<prefix>:run:<runId>`. */
export function runKey(prefix: string, runId: string): string {
  return `${prefix}:run:${runId}`;
}

/** Feature block of one ticker: `<prefix>:run:<runId>:feat:<ticker>`. */
export function featureKey(prefix: string, runId: string, ticker: string): string {
  return `${prefix}:run:${runId}:feat:${ticker}`;
}

/**
 * What the route job of one shard hands the report (its tickers' summaries and failures, the shard's per-day
 * aggregates; `ShardOutput` in jobs/payloads.ts), JSON with the feature TTL: `<prefix>:run:<runId>:shard:<shard>`.
 */
export function shardKey(prefix: string, runId: string, shard: number): string {
  return `${prefix}:run:${runId}:shard:${shard}`;
}

/** Sorted set of run ids by creation time, so tools can list recent runs: `<prefix>:runs`. */
export function runsIndexKey(prefix: string): string {
  return `${prefix}:runs`;
}

/** Scan pattern of every run hash and run key (`<prefix>:run*`), for tools that remove a private prefix's runs. */
export function runKeysPattern(prefix: string): string {
  return `${prefix}:run*`;
}

/** Scan pattern of every key of a deployment's prefix. */
export function prefixPattern(prefix: string): string {
  return `${prefix}:*`;
}

/** Compact records of a universe's recent runs (the drift baseline): `<prefix>:universe:<id>`. */
export function universeKey(prefix: string, universe: string): string {
  return `${prefix}:universe:${universe}`;
}

/** Scan pattern of every universe history. */
export function universeKeysPattern(prefix: string): string {
  return `${prefix}:universe:*`;
}

/** Cached bars of a network source: `<prefix>:bars:<source>:<TICKER>:<days>:<end>`. */
export function barCacheKey(prefix: string, source: string, ticker: string, range: { days: number; end: string }): string {
  return `${prefix}:bars:${source}:${ticker}:${range.days}:${range.end}`;
}

/** Lock held by the one process fetching a cached series (`<bar cache key>:lock`). */
export function barCacheLockKey(cacheKey: string): string {
  return `${cacheKey}:lock`;
}

/** Request-rate window shared by every worker that calls one outside service: `<prefix>:ratelimit:<service>`. */
export function rateLimitKey(prefix: string, service: string): string {
  return `${prefix}:ratelimit:${service}`;
}

/** BullMQ's own hash of a job: `<prefix>:<queue>:<jobId>`. */
export function bullJobKey(prefix: string, queue: string, jobId: string): string {
  return `${prefix}:${queue}:${jobId}`;
}

/**
 * BullMQ job ids. BullMQ treats an id containing `:` as a job key (prefix:queue:id), so `_` separates the parts.
 * Fixed ids make a run's jobs addressable (progress, failures) and adding the same flow twice idempotent.
 */
export const jobIds = {
  fetch: (runId: string, ticker: string) => `fetch_${runId}_${ticker}`,
  /** The route job of shard `shard` (0-based) of a run. */
  route: (runId: string, shard: number) => `route_${runId}_${shard}`,
  report: (runId: string) => `report_${runId}`,
  /** The gate of a run's report (route queue): held back until every shard has been added (enqueue-run.ts). */
  gate: (runId: string) => `gate_${runId}`,
};

/**
 * Ticker of a fetch job from its job key (`<prefix>:moe-fetch:fetch_<runId>_<ticker>`) or id; undefined when the
 * key is not a fetch job key.
 */
export function tickerFromFetchJobKey(jobKey: string): string | undefined {
  const id = jobKey.slice(jobKey.lastIndexOf(':') + 1);
  const parts = id.split('_');
  if (parts.length !== 3 || parts[0] !== 'fetch' || !isRunId(parts[1])) return undefined;
  return parts[2] || undefined;
}

/**
 * Shard index of a route job from its job key (`<prefix>:moe-route:route_<runId>_<shard>`) or id; undefined when the
 * key is not a route job key.
 */
export function shardFromRouteJobKey(jobKey: string): number | undefined {
  const id = jobKey.slice(jobKey.lastIndexOf(':') + 1);
  const parts = id.split('_');
  if (parts.length !== 3 || parts[0] !== 'route' || !isRunId(parts[1]) || !/^(0|[1-9]\d{0,8})$/.test(parts[2] ?? '')) return undefined;
  return Number(parts[2]);
}
