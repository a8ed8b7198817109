import type { RedisClient } from './connection.js';
import type { SourceName } from '../src/data/types.js';
import { runKey, runsIndexKey } from './keys.js';
import { evalScript } from './scripts.js';

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
  /** The run's tickers in request order; read with `{ tickerList: false }`, only the first `TICKERS_HEAD` of them. */
  tickers: string[];
  /** How many tickers the run has. */
  tickerCount: number;
  /** Fetch jobs that stored a feature block. */
  fetched: number;
  /** Fetch jobs that failed for good (after their last attempt). */
  fetchFailed: number;
  createdAt: string;
  /** Shards the run is cut into, each one route job (1 for a run enqueued before runs had shards). */
  shards: number;
  /** Shards whose route job has stored its output. */
  shardsRouted: number;
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
  redis: RedisClient;
  prefix: string;
  ttlSeconds: number;
}

export async function createRunMeta(
  store: RunStore,
  meta: Pick<RunMeta, 'runId' | 'source' | 'tickers' | 'createdAt'> & Partial<Pick<RunMeta, 'shards'>>,
): Promise<void> {
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
      tickerCount: meta.tickers.length,
      tickersHead: JSON.stringify(meta.tickers.slice(0, TICKERS_HEAD)),
      fetched: 0,
      fetchFailed: 0,
      createdAt: meta.createdAt,
      shards: meta.shards ?? 1,
      shardsRouted: 0,
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
  await evalScript(
    store.redis,
    "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], unpack(ARGV)) end return 0",
    1,
    key,
    ...args,
  );
}

/** Prefix of the error of a run whose enqueue failed part of the way (enqueue-run.ts). */
export const ENQUEUE_FAILED = 'enqueue failed: ';

const REOPEN =
  "if redis.call('HGET', KEYS[1], 'status') == 'failed' and string.sub(redis.call('HGET', KEYS[1], 'error') or '', 1, " +
  `${ENQUEUE_FAILED.length}) == '${ENQUEUE_FAILED}' then redis.call('HSET', KEYS[1], 'status', 'queued') redis.call('HDEL', KEYS[1], 'error') return 1 end return 0`;

/**
 * A run marked failed only because its enqueue was cut short goes back to `queued` when that enqueue is completed;
 * any other failure stands. Returns whether it was reopened.
 */
export async function reopenAfterEnqueueFailure(store: RunStore, runId: string): Promise<boolean> {
  return (await evalScript(store.redis, REOPEN, 1, runKey(store.prefix, runId))) === 1;
}

/** Statuses of a run that has ended: no stage job may change it any more. */
export const ENDED_STATUSES: readonly RunStatus[] = ['finished', 'failed'];

/** Status a stage sets when it starts. */
export type StageStatus = 'routing' | 'reporting';

/**
 * Statuses from which a stage may start, or start again after a crash. Routing follows the fetch stage (`queued`)
 * or a route attempt that died (`routing`); reporting follows routing, a route stage that failed before it started
 * (`queued`), or a report attempt that died (`reporting`). Any other status means the job is not the run's live one.
 */
export const STAGE_FROM: Readonly<Record<StageStatus, readonly RunStatus[]>> = {
  routing: ['queued', 'routing'],
  reporting: ['queued', 'routing', 'reporting'],
};

/** KEYS[1] run hash; ARGV[1] new status, ARGV[2..] allowed ones. `{1}` entered, `{0, status}` refused, `{2}` no hash. */
const ENTER_STAGE =
  "local s = redis.call('HGET', KEYS[1], 'status') " +
  'if not s then return {2} end ' +
  'for i = 2, #ARGV do if ARGV[i] == s then ' +
  "redis.call('HSET', KEYS[1], 'status', ARGV[1]) return {1} end end " +
  'return {0, s}';

/**
 * Moves a run to `status` when it is in one of `STAGE_FROM[status]`, atomically, so two jobs cannot both pass the
 * check. Returns undefined when the stage may go on (also when the run has no hash: expired, or a flow enqueued
 * without one, which `updateRunMeta` leaves alone too), else the status that refused it.
 */
export async function enterStage(store: RunStore, runId: string, status: StageStatus): Promise<{ status: string; allowed: readonly RunStatus[] } | undefined> {
  const allowed = STAGE_FROM[status];
  const [entered, was] = (await evalScript(store.redis, ENTER_STAGE, 1, runKey(store.prefix, runId), status, ...allowed)) as [number, string?];
  return entered === 0 ? { status: was ?? '', allowed } : undefined;
}

/** Lua test of an ended run: `s` is its status (false when the hash is gone). */
const ENDED_LUA = ENDED_STATUSES.map((s) => `s == '${s}'`).join(' or ');

const FAIL_RUN =
  "local s = redis.call('HGET', KEYS[1], 'status') " +
  `if s and not (${ENDED_LUA}) then redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[1]) end return 0`;

/**
 * Marks a run failed with `error`, unless it has already ended: a run whose report was written stays finished
 * whatever fails after, and a failed run keeps its first reason.
 */
export async function failRun(store: RunStore, runId: string, error: string): Promise<void> {
  await evalScript(store.redis, FAIL_RUN, 1, runKey(store.prefix, runId), error);
}

const BUMP =
  "local s = redis.call('HGET', KEYS[1], 'status') " +
  `if s and not (${ENDED_LUA}) then redis.call('HINCRBY', KEYS[1], ARGV[1], 1) end return 0`;

/** Adds one to a progress counter of an existing run that has not ended. */
export async function bumpRunCounter(store: RunStore, runId: string, field: 'fetched' | 'fetchFailed'): Promise<void> {
  await evalScript(store.redis, BUMP, 1, runKey(store.prefix, runId), field);
}

/** What the store scripts return: 0 once stored, or the status of a run that has ended. */
const endedStatus = (reply: unknown): string | undefined => (typeof reply === 'string' ? reply : undefined);

function checkTtl(ttlSeconds: number): void {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) {
    throw new RangeError(`Expected positive integer for ttlSeconds but received ${String(ttlSeconds)}`);
  }
}

/**
 * SET of each block with its TTL, then `fetched` raised by their count, in one script: atomic, so the counter never
 * runs ahead. KEYS: the run's hash, then one key per block; ARGV: the TTL, then the blocks in the keys' order. A run
 * that has ended takes nothing (stray fetch jobs) and the script returns its status instead of 0.
 */
const STORE_FETCHED =
  "local s = redis.call('HGET', KEYS[1], 'status') " +
  `if s and (${ENDED_LUA}) then return s end ` +
  "for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[i], 'EX', ARGV[1]) end " +
  "if s then redis.call('HINCRBY', KEYS[1], 'fetched', #KEYS - 1) end return 0";

/**
 * Stores fetched tickers' blocks of one run and counts them, in one round trip: with thousands of fetch jobs per
 * run, each round trip is a write on the fetch worker's main thread and a script call in Redis (the fetch worker
 * gathers the blocks that finish together, `workers/block-store.ts`). One script rather than MULTI/SET/EVAL/EXEC:
 * the transaction's pipeline and its replies cost the main thread about twice as much (CPU profile of
 * `bench:pipeline`), for the same atomicity. Returns undefined once stored, or the status of a run that has already
 * ended, in which case nothing was written.
 */
export async function storeFetchedBlocks(
  store: RunStore,
  runId: string,
  blocks: readonly { key: string; block: Buffer }[],
  ttlSeconds: number,
): Promise<string | undefined> {
  checkTtl(ttlSeconds);
  if (blocks.length === 0) throw new RangeError(`Expected at least one block to store for run ${runId} but received none`);
  return endedStatus(
    await evalScript(store.redis, STORE_FETCHED, 1 + blocks.length, runKey(store.prefix, runId), ...blocks.map((b) => b.key), ttlSeconds, ...blocks.map((b) => b.block)),
  );
}

/** One ticker's block (storeFetchedBlocks with one block). */
export async function storeFetched(store: RunStore, runId: string, key: string, block: Buffer, ttlSeconds: number): Promise<string | undefined> {
  return storeFetchedBlocks(store, runId, [{ key, block }], ttlSeconds);
}

/**
 * SET of a shard's output with its TTL, and the first time it is stored for the shard, one more in `shardsRouted`:
 * a route job retried after it stored its output (a worker killed before BullMQ heard of the result) counts once.
 * A run that has ended takes nothing and the script returns its status instead of 0.
 */
const STORE_SHARD =
  "local s = redis.call('HGET', KEYS[2], 'status') " +
  `if s and (${ENDED_LUA}) then return s end ` +
  "local fresh = redis.call('EXISTS', KEYS[1]) == 0 " +
  "redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) " +
  "if s and fresh then redis.call('HINCRBY', KEYS[2], 'shardsRouted', 1) end return 0";

/**
 * Stores a shard's output (`ShardOutput` JSON) under `key` and counts the shard as routed, in one step. Returns
 * undefined once stored, or the status of a run that has already ended, in which case nothing was written.
 */
export async function storeShardOutput(store: RunStore, runId: string, key: string, json: string, ttlSeconds: number): Promise<string | undefined> {
  checkTtl(ttlSeconds);
  return endedStatus(await evalScript(store.redis, STORE_SHARD, 2, key, runKey(store.prefix, runId), json, ttlSeconds));
}

/** The run's ticker list alone (the report reads it instead of carrying it in its payload); undefined without a hash. */
export async function readRunTickers(redis: RedisClient, prefix: string, runId: string): Promise<unknown> {
  const raw = await redis.hget(runKey(prefix, runId), 'tickers');
  return raw === null ? undefined : (JSON.parse(raw) as unknown);
}

function optInt(v: string | undefined): number | undefined {
  return v === undefined ? undefined : Number(v);
}

/** Tickers a run's hash also keeps apart, for readers that show a run without its whole list. */
export const TICKERS_HEAD = 8;

/** Fields of the run hash other than the ticker list (HMGET reads them without the list's megabytes). */
const META_FIELDS = ['runId', 'status', 'source', 'tickerCount', 'tickersHead', 'fetched', 'fetchFailed', 'createdAt', 'shards', 'shardsRouted', 'routed', 'failedTickers', 'backend', 'reportDir', 'finishedAt', 'error'] as const;

/**
 * The run's metadata, or undefined without a hash. With `{ tickerList: false }` (progress watchers, the dashboard,
 * metrics) the ticker list stays in Redis and `tickers` holds its first `TICKERS_HEAD`: a 100,000-ticker run's list is
 * 1.5 MB of JSON, read and parsed on every poll otherwise. A hash written before `tickerCount` existed is read whole.
 */
export async function readRunMeta(redis: RedisClient, prefix: string, runId: string, opts: { tickerList?: boolean } = {}): Promise<RunMeta | undefined> {
  const key = runKey(prefix, runId);
  let h: Record<string, string | undefined>;
  if (opts.tickerList === false) {
    const values = await redis.hmget(key, ...META_FIELDS);
    h = Object.fromEntries(META_FIELDS.map((f, i) => [f, values[i] ?? undefined]));
    if (h.runId && (h.tickerCount === undefined || h.tickersHead === undefined)) h = await redis.hgetall(key);
  } else {
    h = await redis.hgetall(key);
  }
  if (!h.runId) return undefined;
  const tickers = JSON.parse(h.tickers ?? h.tickersHead ?? '[]') as string[];
  const meta: RunMeta = {
    runId: h.runId,
    status: (RUN_STATUSES as readonly string[]).includes(h.status ?? '') ? (h.status as RunStatus) : 'queued',
    source: h.source as SourceName,
    tickers: opts.tickerList === false ? tickers.slice(0, TICKERS_HEAD) : tickers,
    tickerCount: h.tickerCount !== undefined ? Number(h.tickerCount) : tickers.length,
    fetched: Number(h.fetched ?? 0),
    fetchFailed: Number(h.fetchFailed ?? 0),
    createdAt: h.createdAt ?? '',
    shards: Number(h.shards ?? 1),
    shardsRouted: Number(h.shardsRouted ?? 0),
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
