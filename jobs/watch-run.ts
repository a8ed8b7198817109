import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { jobIds } from './keys.js';
import { readRunMeta, type RunMeta } from './run-meta.js';

export interface WatchOptions {
  redis: Redis;
  prefix: string;
  runId: string;
  /** The `moe-report` queue (same prefix): its job's state is the final word on the run. */
  reportQueue: Queue;
  /** Called whenever the run's progress changes. */
  onProgress?: (meta: RunMeta) => void;
  /** @defaultValue 250 */
  intervalMs?: number;
  /** Give up after this long; 0 waits forever. @defaultValue 0 */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export class WatchError extends Error {
  readonly code: 'RUN_GONE' | 'TIMEOUT' | 'ABORTED';
  constructor(code: WatchError['code'], message: string) {
    super(message);
    this.name = this.constructor.name;
    this.code = code;
  }
}

function fingerprint(m: RunMeta): string {
  return `${m.status}|${m.fetched}|${m.fetchFailed}|${m.routed ?? ''}|${m.reportDir ?? ''}`;
}

/**
 * Polls a run until it ends and returns its final metadata (status `finished` or `failed`). Polling a hash is
 * cheaper and simpler than QueueEvents streams for a few updates a second, and survives a CLI reconnect.
 */
export async function watchRun(opts: WatchOptions): Promise<RunMeta> {
  const interval = opts.intervalMs ?? 250;
  const deadline = opts.timeoutMs ? Date.now() + opts.timeoutMs : Number.POSITIVE_INFINITY;
  let last = '';
  for (;;) {
    if (opts.signal?.aborted) throw new WatchError('ABORTED', `Stopped watching run ${opts.runId}`);
    const meta = await readRunMeta(opts.redis, opts.prefix, opts.runId);
    if (meta === undefined) throw new WatchError('RUN_GONE', `Run ${opts.runId} has no metadata (expired or never enqueued)`);
    const fp = fingerprint(meta);
    if (fp !== last) {
      last = fp;
      opts.onProgress?.(meta);
    }
    if (meta.status === 'finished' || meta.status === 'failed') return meta;
    const job = await opts.reportQueue.getJob(jobIds.report(opts.runId));
    if (job !== undefined && (await job.getState()) === 'failed') {
      return { ...meta, status: 'failed', error: meta.error ?? `report failed: ${job.failedReason ?? 'unknown reason'}` };
    }
    if (Date.now() > deadline) throw new WatchError('TIMEOUT', `Run ${opts.runId} did not finish within ${opts.timeoutMs} ms (status ${meta.status})`);
    await new Promise((r) => setTimeout(r, interval));
  }
}
