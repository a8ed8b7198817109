import { Redis } from 'ioredis';
import { errorText } from '../src/util/errors.js';

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
 * Creates an ioredis connection. Each BullMQ Worker/Queue given this instance duplicates it for its blocking
 * commands, so one connection per process role is enough.
 */
export function createRedis(url: string, opts: ConnectionOptions = {}): Redis {
  const worker = opts.role === 'worker';
  let wasReady = false;
  const redis = new Redis(url, {
    maxRetriesPerRequest: worker ? null : 2,
    enableOfflineQueue: true,
    connectionName: opts.name,
    // A client gives up after a few quick attempts (unless it reconnects and was up); a worker keeps trying with a
    // capped delay.
    retryStrategy: (times: number) => {
      if (worker) return Math.min(times * 200, 5_000);
      if (wasReady) return Math.min(times * 100, 1_000);
      return times > 3 ? null : times * 100;
    },
  });
  if (opts.reconnect && !worker) redis.once('ready', () => (wasReady = true));
  return redis;
}

/** Resolves when the connection answers PING; rejects with the connection error otherwise. */
export async function waitReady(redis: Redis, timeoutMs = 5_000): Promise<void> {
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
export async function closeRedis(redis: Redis): Promise<void> {
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
  constructor(url: string, cause: unknown) {
    super(`Expected a Redis server at ${redactUrl(url)} but received ${errorText(cause)}`, { cause });
    this.name = this.constructor.name;
  }
}

/** The URL without its password, for messages and logs. */
export function redactUrl(url: string): string {
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
export async function connectClient(url: string, name: string, timeoutMs = 5_000, opts: Pick<ConnectionOptions, 'reconnect'> = {}): Promise<Redis> {
  const redis = createRedis(url, { role: 'client', name, reconnect: opts.reconnect });
  let lastError: unknown;
  const onError = (err: unknown) => {
    lastError = err;
  };
  redis.on('error', onError);
  try {
    await waitReady(redis, timeoutMs);
  } catch (err) {
    redis.disconnect();
    throw new RedisUnavailableError(url, lastError ?? err);
  }
  redis.off('error', onError);
  return redis;
}
