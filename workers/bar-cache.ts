import { randomUUID } from 'node:crypto';
import type { RedisClient } from '../jobs/connection.js';
import { resolveRange } from '../src/data/sources/range.js';
import { sourceTicker } from '../src/data/validate.js';
import type { DataSource } from '../src/data/sources/create.js';
import type { FetchRange, SourceResult } from '../src/data/types.js';
import { barCacheKey, barCacheLockKey } from '../jobs/keys.js';
import { evalScript } from '../jobs/scripts.js';

/**
 * Bars of a network source cached in Redis, so that the same ticker and range is fetched once a day however many
 * runs (and fetch workers) ask for it: the scheduled run, a person's ad-hoc run and the per-run market-context step
 * all read one copy. The key holds the resolved range, whose end is today's date when the caller gave none, so a
 * new day means a new key; the TTL bounds how long a copy may serve.
 */

export interface BarCacheOptions {
  redis: RedisClient;
  /** Key prefix of the deployment (`MOE_PREFIX`). */
  prefix: string;
  /** Lifetime of a cached series. @defaultValue 86400 */
  ttlSeconds?: number;
  /**
   * How long one fetcher holds the right to fetch a key while others wait for its result; after that they fetch
   * themselves (a crashed holder cannot stall a run). @defaultValue 30000
   */
  lockMs?: number;
  /** Poll interval of a waiter. @defaultValue 100 */
  pollMs?: number;
}

export interface CachedBars extends SourceResult {
  /** True when the bars came from Redis rather than the source. */
  cached: boolean;
}

const RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/**
 * Bars for `ticker` and `range` from the cache, or from `source` (then stored). Concurrent callers of the same key,
 * in any process, wait for the first one's answer instead of fetching again. Errors are not cached: a failed fetch
 * is tried again by the next caller (the source itself decides what is worth retrying).
 */
export async function getBarsCached(cache: BarCacheOptions, source: DataSource, ticker: string, range: FetchRange): Promise<CachedBars> {
  const t = sourceTicker(ticker);
  const resolved = resolveRange(range);
  const key = barCacheKey(cache.prefix, source.name, t, resolved);
  const ttl = cache.ttlSeconds ?? 86_400;
  const lockMs = cache.lockMs ?? 30_000;
  const pollMs = cache.pollMs ?? 100;

  const hit = await cache.redis.get(key);
  if (hit !== null) return { ...(JSON.parse(hit) as SourceResult), cached: true };

  const lockKey = barCacheLockKey(key);
  const token = randomUUID();
  const deadline = Date.now() + lockMs;
  while ((await cache.redis.set(lockKey, token, 'PX', lockMs, 'NX')) === null) {
    // Someone else is fetching this key: wait for their copy, or take over once their lock lapses.
    await new Promise((r) => setTimeout(r, pollMs));
    const v = await cache.redis.get(key);
    if (v !== null) return { ...(JSON.parse(v) as SourceResult), cached: true };
    if (Date.now() > deadline) break;
  }
  try {
    // The lock may have come free because its holder just stored the bars: look again before fetching.
    const stored = await cache.redis.get(key);
    if (stored !== null) return { ...(JSON.parse(stored) as SourceResult), cached: true };
    const res = await source.fetch(t, { days: resolved.days, end: resolved.end });
    await cache.redis.set(key, JSON.stringify(res), 'EX', ttl);
    return { ...res, cached: false };
  } finally {
    await evalScript(cache.redis, RELEASE, 1, lockKey, token);
  }
}
