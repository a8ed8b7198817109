import { Cluster, Redis, type ClusterNode, type RedisOptions } from 'ioredis';
import { redisNodeUrls, type Config } from '../src/config.js';
import { errorText } from '../src/util/errors.js';

/** A connection to one Redis server or to a Redis Cluster; BullMQ and every module of the project take either. */
export type RedisClient = Redis | Cluster;

/**
 * Where to connect: a redis:// URL (one server), or a configuration (`redisUrl`, and `redisCluster` for the seed
 * nodes of a cluster).
 */
export type RedisTarget = string | Pick<Config, 'redisUrl' | 'redisCluster'>;

function targetUrl(target: RedisTarget): string {
  return typeof target === 'string' ? target : target.redisUrl;
}

function isClusterTarget(target: RedisTarget): boolean {
  return typeof target !== 'string' && target.redisCluster;
}

export interface ConnectionOptions {
  /**
   * `worker`: blocking connections for BullMQ workers and QueueEvents; commands wait through Redis restarts
   * (`maxRetriesPerRequest: null`, which BullMQ requires for workers).
   * `client`: producers and CLIs; fail fast so a missing Redis gives an error instead of a hang.
   * @defaultValue `client`
   */
  role?: 'worker' | 'client';
  /** Shown in `CLIENT LIST`, handy when several hosts share one Redis. */
  name?: string;
  /**
   * `client` only: once the connection has been up, a lost one is retried for good (at most a second apart) instead
   * of given up after three quick attempts, so a CLI that follows a run rides out a Redis restart. Connecting the
   * first time still fails fast, and each command still fails after `maxRetriesPerRequest` attempts while Redis is
   * away, so the caller decides how long to wait. @defaultValue false
   */
  reconnect?: boolean;
}

/**
 * Creates an ioredis connection: `Redis` for a URL or a single-server configuration, `Cluster` for a configuration
 * with `redisCluster`. Each BullMQ Worker/Queue given this instance duplicates it for its blocking commands, so one
 * connection per process role is enough.
 */
export function createRedis(url: string, opts?: ConnectionOptions): Redis;
export function createRedis(target: RedisTarget, opts?: ConnectionOptions): RedisClient;
export function createRedis(target: RedisTarget, opts: ConnectionOptions = {}): RedisClient {
  const worker = opts.role === 'worker';
  let wasReady = false;
  // A client gives up after a few quick attempts (unless it reconnects and was up); a worker keeps trying with a
  // capped delay.
  const retryStrategy = (times: number) => {
    if (worker) return Math.min(times * 200, 5_000);
    if (wasReady) return Math.min(times * 100, 1_000);
    return times > 3 ? null : times * 100;
  };
  const options = {
    // BullMQ refuses a worker connection whose commands give up (for a cluster it reads this from redisOptions).
    maxRetriesPerRequest: worker ? null : 2,
    enableOfflineQueue: true,
    connectionName: opts.name,
  } satisfies RedisOptions;
  const redis = isClusterTarget(target) ? createCluster(targetUrl(target), options, retryStrategy) : new Redis(targetUrl(target), { ...options, retryStrategy });
  if (opts.reconnect && !worker) redis.once('ready', () => (wasReady = true));
  return redis;
}

/**
 * A `Cluster` over the seed nodes of `redisUrl` (comma-separated URLs; the first one's user, password and TLS apply to
 * every node, including those the cluster reports). ioredis learns the other nodes and the slot map from the seeds.
 */
function createCluster(redisUrl: string, options: RedisOptions, retryStrategy: (times: number) => number | null): Cluster {
  const urls = redisNodeUrls(redisUrl);
  const first = urls[0]!;
  const nodes: ClusterNode[] = urls.map((u) => ({ host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(u.port || 6379) }));
  return new Cluster(nodes, {
    clusterRetryStrategy: retryStrategy,
    enableOfflineQueue: true,
    redisOptions: {
      ...options,
      username: first.username ? decodeURIComponent(first.username) : undefined,
      password: first.password ? decodeURIComponent(first.password) : undefined,
      tls: first.protocol === 'rediss:' ? {} : undefined,
    },
  });
}

/** Resolves when the connection answers PING; rejects with the connection error otherwise. */
export async function waitReady(redis: RedisClient, timeoutMs = 5_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Redis did not answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([redis.ping(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Closes a connection, waiting for pending replies; falls back to disconnect when Redis is gone. */
export async function closeRedis(redis: RedisClient): Promise<void> {
  if (redis.status === 'end') return;
  if (redis.status !== 'ready') {
    // QUIT would sit in the offline queue of a connection that never came up (workers retry forever).
    redis.disconnect();
    return;
  }
  try {
    await redis.quit();
  } catch {
    redis.disconnect();
  }
}

export class RedisUnavailableError extends Error {
  readonly code = 'REDIS_UNAVAILABLE';
  constructor(target: RedisTarget, cause: unknown) {
    const where = isClusterTarget(target) ? 'a Redis Cluster with the seed nodes' : 'a Redis server at';
    super(`Expected ${where} ${redactUrl(targetUrl(target))} but received ${errorText(cause)}`, { cause });
    this.name = this.constructor.name;
  }
}

/** The URL (or comma-separated URLs of cluster nodes) without its password, for messages and logs. */
export function redactUrl(url: string): string {
  if (url.includes(',')) return url.split(',').map(redactUrl).join(',');
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}

/**
 * A client connection that answered PING, or RedisUnavailableError naming the URL and the socket error (instead of
 * ioredis' generic retry-limit message and unhandled error events).
 */
export async function connectClient(url: string, name: string, timeoutMs?: number, opts?: Pick<ConnectionOptions, 'reconnect'>): Promise<Redis>;
export async function connectClient(target: RedisTarget, name: string, timeoutMs?: number, opts?: Pick<ConnectionOptions, 'reconnect'>): Promise<RedisClient>;
export async function connectClient(
  target: RedisTarget,
  name: string,
  timeoutMs = 5_000,
  opts: Pick<ConnectionOptions, 'reconnect'> = {},
): Promise<RedisClient> {
  const redis = createRedis(target, { role: 'client', name, reconnect: opts.reconnect });
  let lastError: unknown;
  const onError = (err: unknown) => {
    // A cluster that reached no seed node says only "Failed to refresh slots cache"; the node's own error says why.
    const nodeError = (err as { lastNodeError?: unknown }).lastNodeError;
    lastError = nodeError === undefined ? err : `${errorText(err)} (${errorText(nodeError)})`;
  };
  redis.on('error', onError);
  try {
    await waitReady(redis, timeoutMs);
  } catch (err) {
    redis.disconnect();
    throw new RedisUnavailableError(target, lastError ?? err);
  }
  redis.off('error', onError);
  return redis;
}

/**
 * Every key matching `pattern`, a batch at a time: SCAN on a single server, on each master of a cluster (a cluster
 * node scans only its own slots). With a hash-tagged prefix one master holds all of a deployment's keys.
 */
export async function* scanKeys(redis: RedisClient, pattern: string, count = 500): AsyncGenerator<string[]> {
  // A cluster knows its masters once it has read the slot map; PING makes a fresh connection do so.
  if (redis.isCluster && redis.status !== 'ready') await waitReady(redis);
  const nodes = redis.isCluster ? (redis as Cluster).nodes('master') : [redis as Redis];
  if (nodes.length === 0) throw new Error(`Expected a connected Redis Cluster to scan for ${pattern} but received no master node`);
  for (const node of nodes) {
    for await (const keys of node.scanStream({ match: pattern, count })) {
      if ((keys as string[]).length > 0) yield keys as string[];
    }
  }
}

/**
 * Deletes every key matching `pattern`; returns how many. One DEL per batch on a single server; one per key on a
 * cluster, where a DEL of keys in several slots fails (CROSSSLOT) and a pattern may match keys of any slot.
 */
export async function deleteMatching(redis: RedisClient, pattern: string): Promise<number> {
  let n = 0;
  for await (const keys of scanKeys(redis, pattern)) {
    n += redis.isCluster ? (await Promise.all(keys.map((k) => redis.del(k)))).reduce((a, b) => a + b, 0) : await redis.del(...keys);
  }
  return n;
}
