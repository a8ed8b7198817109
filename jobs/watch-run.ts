import type { Queue } from 'bullmq';
import type { RedisClient } from './connection.js';
import { errorText } from '../src/util/errors.js';
import { jobIds } from './keys.js';
import { readRunMeta, type RunMeta } from './run-meta.js';

/** What `onConnection` is told: the connection dropped (with the socket's error code or why), or it is back. */
export type ConnectionChange = { state: 'lost'; reason: string } | { state: 'back' };

export interface WatchOptions {
  redis: RedisClient;
  prefix: string;
  runId: string;
  /** The `moe-report` queue (same prefix): its job's state is the final word on the run. */
  reportQueue: Queue;
  /** Called whenever the run's progress changes. */
  onProgress?: (meta: RunMeta) => void;
  /**
   * Called once when the connection to Redis drops while watching and once when it is back. In between the watch
   * keeps polling (a Redis restart loses nothing with AOF on, and the workers ride it out too), so `redis` should be
   * a connection that reconnects (`connectClient(…, { reconnect: true })`); one that gave up ends the watch.
   */
  onConnection?: (change: ConnectionChange) => void;
  /** @defaultValue 250 */
  intervalMs?: number;
  /** Give up after this long; 0 waits forever. @defaultValue 0 */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export class WatchError extends Error {
  readonly code: 'RUN_GONE' | 'TIMEOUT' | 'ABORTED' | 'REDIS_GONE';
  constructor(code: WatchError['code'], message: string) {
    super(message);
    this.name = this.constructor.name;
    this.code = code;
  }
}

function fingerprint(m: RunMeta): string {
  return `${m.status}|${m.fetched}|${m.fetchFailed}|${m.shardsRouted}|${m.routed ?? ''}|${m.reportDir ?? ''}`;
}

const CONNECTION_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/**
 * True for the errors of a Redis that is away rather than of a command: socket errors, ioredis giving up on a
 * command while it reconnects (`MaxRetriesPerRequestError`), a closed connection, and a server still loading its
 * data set after a restart.
 */
export function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as NodeJS.ErrnoException).code;
  return (
    (code !== undefined && CONNECTION_CODES.has(code)) ||
    err.name === 'MaxRetriesPerRequestError' ||
    err.message === 'Connection is closed.' ||
    err.message.startsWith('LOADING ')
  );
}

/** The socket error's code (`ECONNRESET`) when there is one, else its text. */
function lossReason(err: unknown): string {
  const code = err instanceof Error ? (err as NodeJS.ErrnoException).code : undefined;
  return code ?? errorText(err);
}

/** The run's metadata, with the report job's failure folded in when the workers could not write it. */
async function poll(opts: WatchOptions): Promise<RunMeta> {
  const meta = await readRunMeta(opts.redis, opts.prefix, opts.runId, { tickerList: false });
  if (meta === undefined) throw new WatchError('RUN_GONE', `Run ${opts.runId} has no metadata (expired or never enqueued)`);
  if (meta.status === 'finished' || meta.status === 'failed') return meta;
  const job = await opts.reportQueue.getJob(jobIds.report(opts.runId));
  if (job !== undefined && (await job.getState()) === 'failed') {
    return { ...meta, status: 'failed', error: meta.error ?? `report failed: ${job.failedReason ?? 'unknown reason'}` };
  }
  return meta;
}

/**
 * Polls a run until it ends and returns its final metadata (status `finished` or `failed`). Polling a hash is
 * cheaper and simpler than QueueEvents streams for a few updates a second, and survives a reconnect: while Redis is
 * away the watch waits (until `timeoutMs` or `signal`), says so through `onConnection`, and goes on where it was.
 */
export async function watchRun(opts: WatchOptions): Promise<RunMeta> {
  const interval = opts.intervalMs ?? 250;
  const deadline = opts.timeoutMs ? Date.now() + opts.timeoutMs : Number.POSITIVE_INFINITY;
  const { redis } = opts;
  // A function, not a comparison in place: the status changes under an await, which TypeScript's narrowing ignores.
  const gaveUp = () => redis.status === 'end';
  let last = '';
  let status: RunMeta['status'] | undefined;
  let lost = false;
  // A socket error comes just before the close it causes; a clean close (Redis shut down) comes alone.
  let lastError: unknown;
  const markLost = (why: unknown) => {
    if (lost) return;
    lost = true;
    opts.onConnection?.({ state: 'lost', reason: lossReason(why) });
  };
  const markBack = () => {
    lastError = undefined;
    if (!lost) return;
    lost = false;
    opts.onConnection?.({ state: 'back' });
  };
  const onError = (err: unknown) => (lastError = err);
  const onClose = () => markLost(lastError ?? 'connection closed');
  const onReady = markBack;
  redis.on('error', onError);
  redis.on('close', onClose);
  redis.on('ready', onReady);
  try {
    for (;;) {
      if (opts.signal?.aborted) throw new WatchError('ABORTED', `Stopped watching run ${opts.runId}`);
      // While reconnecting, a command would only wait in ioredis' offline queue: look again at the next tick.
      if (redis.status === 'ready') {
        let meta: RunMeta | undefined;
        try {
          meta = await poll(opts);
        } catch (err) {
          // A connection that gave up for good (status `end`) will not come back: that error is the answer.
          if (!isConnectionError(err) || gaveUp()) throw err;
          // The socket's error says more than ioredis' "max retries per request" on the command.
          markLost(lastError ?? err);
        }
        if (meta !== undefined) {
          markBack();
          status = meta.status;
          const fp = fingerprint(meta);
          if (fp !== last) {
            last = fp;
            opts.onProgress?.(meta);
          }
          if (meta.status === 'finished' || meta.status === 'failed') return meta;
        }
      } else if (gaveUp()) {
        throw new WatchError('REDIS_GONE', `Lost Redis while watching run ${opts.runId}: ${lossReason(lastError ?? 'connection closed')}`);
      }
      if (Date.now() > deadline) {
        const where = lost ? 'Redis unreachable' : `status ${status ?? 'unknown'}`;
        throw new WatchError('TIMEOUT', `Run ${opts.runId} did not finish within ${opts.timeoutMs} ms (${where})`);
      }
      await new Promise((r) => setTimeout(r, interval));
    }
  } finally {
    redis.off('error', onError);
    redis.off('close', onClose);
    redis.off('ready', onReady);
  }
}
