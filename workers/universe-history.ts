import type { RedisClient } from '../jobs/connection.js';
import { isUniverseRunRecord, type UniverseRunRecord } from '../src/report/drift.js';
import { universeKey } from '../jobs/keys.js';

/**
 * Recent finished runs per universe, so a run's report can measure drift against the run before it. Kept in Redis
 * (not read back from report folders) because report workers may run on several hosts, each with its own disk.
 *
 * `<prefix>:universe:<id>` is a hash `runId → JSON UniverseRunRecord`, trimmed to the newest `HISTORY_RUNS` by
 * creation time. "Previous" means the newest recorded run created before this one, so a retried report job, or two
 * runs reporting out of order, still compare with the run enqueued before them.
 */

/** Runs kept per universe: enough for out-of-order reports; the drift block only ever reads one. */
export const HISTORY_RUNS = 8;

/** How long a universe's history outlives its newest run: 35 days covers monthly schedules. */
export const HISTORY_TTL_SECONDS = 35 * 86_400;

function parse(json: string): UniverseRunRecord | undefined {
  try {
    const v: unknown = JSON.parse(json);
    return isUniverseRunRecord(v) ? v : undefined;
  } catch {
    // A field another version wrote in another shape is not a previous run this one can compare with.
    return undefined;
  }
}

async function records(redis: RedisClient, key: string): Promise<UniverseRunRecord[]> {
  const all = await redis.hgetall(key);
  return Object.values(all)
    .map(parse)
    .filter((r): r is UniverseRunRecord => r !== undefined);
}

/** The newest recorded run of `universe` created before `createdAt` (other than `runId`), if any. */
export async function previousUniverseRun(
  redis: RedisClient,
  prefix: string,
  universe: string,
  runId: string,
  createdAt: string,
): Promise<UniverseRunRecord | undefined> {
  const before = Date.parse(createdAt);
  let best: UniverseRunRecord | undefined;
  for (const r of await records(redis, universeKey(prefix, universe))) {
    const t = Date.parse(r.createdAt);
    if (r.runId === runId || !(t < before)) continue;
    if (best === undefined || t > Date.parse(best.createdAt)) best = r;
  }
  return best;
}

/** Records a finished run and trims the universe's history to the newest `HISTORY_RUNS`. */
export async function recordUniverseRun(
  redis: RedisClient,
  prefix: string,
  universe: string,
  record: UniverseRunRecord,
  ttlSeconds = HISTORY_TTL_SECONDS,
): Promise<void> {
  const key = universeKey(prefix, universe);
  await redis.multi().hset(key, record.runId, JSON.stringify(record)).expire(key, ttlSeconds).exec();
  const all = await redis.hgetall(key);
  const byAge = Object.entries(all)
    .map(([id, json]) => ({ id, t: Date.parse(parse(json)?.createdAt ?? '') }))
    // Unreadable entries sort first (NaN → -Infinity) and are the first to go.
    .sort((a, b) => (Number.isFinite(b.t) ? b.t : -Infinity) - (Number.isFinite(a.t) ? a.t : -Infinity));
  const stale = byAge.slice(HISTORY_RUNS).map((e) => e.id);
  if (stale.length > 0) await redis.hdel(key, ...stale);
}
