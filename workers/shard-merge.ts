import { UnrecoverableError } from 'bullmq';
import type { RedisClient } from '../jobs/connection.js';
import { validateShardOutput, type ShardOutput } from '../jobs/payloads.js';
import { dailyAggregate, mergeDaily } from '../src/report/daily.js';
import type { DailyAggregate, FailedTicker, TickerSummary } from '../src/report/types.js';
import { errorText } from '../src/util/errors.js';

type RouteModel = ShardOutput['model'];

/** One shard's stored output, or undefined when there is none. A malformed one is a permanent failure. */
export async function readShard(redis: RedisClient, key: string, runId: string, shard: number): Promise<ShardOutput | undefined> {
  const raw = await redis.get(key);
  if (raw === null) return undefined;
  let out: ShardOutput;
  try {
    out = validateShardOutput(JSON.parse(raw), `shard output ${key}`);
  } catch (err) {
    throw new UnrecoverableError(`BAD_SHARD: ${errorText(err)}`);
  }
  if (out.runId !== runId || out.shard !== shard) {
    throw new UnrecoverableError(`BAD_SHARD: Expected run ${runId} shard ${shard} in ${key} but received run ${out.runId} shard ${out.shard}`);
  }
  return out;
}

/**
 * A run's shards merged in shard order, one at a time: the per-ticker rows of the merged shards in request order,
 * one per-day aggregate (its size bounded by the run's distinct dates, never by days × tickers) and what the route
 * jobs reported. Shards 0..`next` − 1 are in. The report merges with it; a report worker's `ShardPrefetch` starts one
 * while the run is still being routed, and the report job goes on from where it stopped. Merging always runs in
 * shard order, so the sums come out the same either way.
 */
export class ShardMerge {
  /** The next shard to merge. */
  next = 0;
  readonly tickers: TickerSummary[] = [];
  readonly failed: FailedTicker[] = [];
  daily: DailyAggregate = dailyAggregate([]);
  /** The first merged output's model; undefined while no shard had an output. */
  model: RouteModel | undefined;
  readonly backends = new Set<string>();
  readonly contextMissing = new Set<string>();
  tokens = 0;
  /** Longest enqueue-to-route-start of the shards: the fetch stage of the shard that waited longest. */
  fetchMs = 0;
  /** The shards' route jobs, summed: the route stage's work, however it overlapped the fetching. */
  routeMs = 0;
  forwardMs = 0;
  /** Shards merged from an output (the others are listed as failed). */
  outputs = 0;

  /** Merges shard `next`'s output. */
  add(out: ShardOutput): void {
    if (out.shard !== this.next) throw new RangeError(`Expected shard ${this.next} to merge next but received shard ${out.shard}`);
    if (this.outputs++ === 0) this.model = out.model;
    this.backends.add(out.backend);
    for (const t of out.tickers) this.tickers.push(t);
    for (const f of out.failed) this.failed.push(f);
    this.daily = mergeDaily(this.daily, out.daily);
    this.tokens += out.tokens;
    this.fetchMs = Math.max(this.fetchMs, out.fetchMs);
    this.routeMs += out.routeMs;
    this.forwardMs += out.forwardMs;
    for (const c of out.contextMissing) this.contextMissing.add(c);
    this.next++;
  }

  /** Shard `next` has no output: its tickers are listed as failed with `reason`. */
  addMissing(tickers: readonly string[], reason: string): void {
    for (const ticker of tickers) this.failed.push({ ticker, reason });
    this.next++;
  }

  /** Rows held: routed and failed tickers. */
  get rows(): number {
    return this.tickers.length + this.failed.length;
  }
}
