import type { Redis } from 'ioredis';
import type { SourceName } from '../src/data/types.js';
import { runKey, runsIndexKey } from './keys.js';

/**
 * Per-run metadata hash `<prefix>:run:<runId>`: what CLIs and dashboards show while a run is in flight.
 * The queues hold the truth about jobs; this hash is a cheap summary with a TTL, rewritten by each stage.
 */

export const RUN_STATUSES = ['queued', 'routing', 'reporting', 'finished', 'failed'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

export interface RunMeta {
  runId: string;
  status: RunStatus;
  source: SourceName;
  tickers: string[];
  /** Fetch jobs that stored a feature block. */
  fetched: number;
  /** Fetch jobs that failed for good (after their last attempt). */
  fetchFailed: number;
  createdAt: string;
  /** Tickers routed, once routing finished. */
  routed?: number;
  /** Tickers listed as failed in the report (fetch and route failures), once reported. */
  failedTickers?: number;
  /** Router backend that routed the run, once reported. */
  backend?: string;
  reportDir?: string;
  finishedAt?: string;
  /** Why the run failed, when it did. */
  error?: string;
}

export interface RunStore {
  redis: Redis;
  prefix: string;
  ttlSeconds: number;
}

export async function createRunMeta(store: RunStore, meta: Pick<RunMeta, 'runId' | 'source' | 'tickers' | 'createdAt'>): Promise<void> {
  const key = runKey(store.prefix, meta.runId);
  const index = runsIndexKey(store.prefix);
  const created = Date.parse(meta.createdAt);
  await store.redis
    .multi()
    .hset(key, {
      runId: meta.runId,
      status: 'queued',
      source: meta.source,
      tickers: JSON.stringify(meta.tickers),
      fetched: 0,
      fetchFailed: 0,
      createdAt: meta.createdAt,
    })
    .expire(key, store.ttlSeconds)
    .zadd(index, created, meta.runId)
    // The index lives as long as its newest run; entries older than a run's TTL point at nothing and are trimmed.
    .zremrangebyscore(index, '-inf', created - store.ttlSeconds * 1000)
    .expire(index, store.ttlSeconds)
    .exec();
}

type Updatable = Partial<Pick<RunMeta, 'status' | 'routed' | 'failedTickers' | 'backend' | 'reportDir' | 'finishedAt' | 'error'>>;

/** Updates fields of an existing run; a run whose hash expired is left alone (no TTL-less resurrection). */
export async function updateRunMeta(store: RunStore, runId: string, fields: Updatable): Promise<void> {
  const key = runKey(store.prefix, runId);
  const flat: Record<string, string> = {};
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) flat[k] = String(v);
  if (Object.keys(flat).length === 0) return;
  const args = Object.entries(flat).flat();
  await store.redis.eval(
    "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], unpack(ARGV)) end return 0",
    1,
    key,
    ...args,
  );
}

const BUMP = "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], ARGV[1], 1) end return 0";

/** Adds one to a progress counter of an existing run. */
export async function bumpRunCounter(store: RunStore, runId: string, field: 'fetched' | 'fetchFailed'): Promise<void> {
  await store.redis.eval(BUMP, 1, runKey(store.prefix, runId), field);
}

/** SET of the block with its TTL, then BUMP of `fetched`, in one script: atomic, so the counter never runs ahead. */
const STORE_FETCHED =
  "redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) " +
  "if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HINCRBY', KEYS[2], 'fetched', 1) end return 0";

/**
 * Stores a fetched ticker's block and counts it in one round trip: with thousands of fetch jobs per run, each
 * round trip is latency the job holds its slot for. One EVAL rather than MULTI/SET/EVAL/EXEC: the transaction's
 * pipeline and four replies cost the fetch worker's main thread about twice as much per job (CPU profile of
 * `bench:pipeline`), for the same atomicity.
 */
export async function storeFetched(store: RunStore, runId: string, key: string, block: Buffer, ttlSeconds: number): Promise<void> {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) {
    throw new RangeError(`Expected positive integer for ttlSeconds but received ${String(ttlSeconds)}`);
  }
  await store.redis.eval(STORE_FETCHED, 2, key, runKey(store.prefix, runId), block, ttlSeconds);
}

function optInt(v: string | undefined): number | undefined {
  return v === undefined ? undefined : Number(v);
}

export async function readRunMeta(redis: Redis, prefix: string, runId: string): Promise<RunMeta | undefined> {
  const h = await redis.hgetall(runKey(prefix, runId));
  if (!h.runId) return undefined;
  const meta: RunMeta = {
    runId: h.runId,
    status: (RUN_STATUSES as readonly string[]).includes(h.status ?? '') ? (h.status as RunStatus) : 'queued',
    source: h.source as SourceName,
    tickers: JSON.parse(h.tickers ?? '[]') as string[],
    fetched: Number(h.fetched ?? 0),
    fetchFailed: Number(h.fetchFailed ?? 0),
    createdAt: h.createdAt ?? '',
  };
  const routed = optInt(h.routed);
  if (routed !== undefined) meta.routed = routed;
  const failedTickers = optInt(h.failedTickers);
  if (failedTickers !== undefined) meta.failedTickers = failedTickers;
  if (h.backend) meta.backend = h.backend;
  if (h.reportDir) meta.reportDir = h.reportDir;
  if (h.finishedAt) meta.finishedAt = h.finishedAt;
  if (h.error) meta.error = h.error;
  return meta;
}
