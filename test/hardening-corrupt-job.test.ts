import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue, QueueEvents, type JobState } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clearPrefix } from './helpers/redis.js';
import { loadConfig, type Config } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { initParams, saveModel } from '../src/router/model.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { bullJobKey } from '../jobs/keys.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import { startWorkers, type RunningWorkers } from '../workers/start.js';

/**
 * A job whose `data` in Redis is not JSON used to stay active for good: BullMQ's Job.fromJSON threw after the job
 * had been moved to active, no processor ever saw it, and the stalled checker kept taking it back. It now fails
 * with the reason on its first attempt, and the worker goes on with the next job.
 */

describe('a job whose data in Redis is corrupt JSON', () => {
  let tmp: string;
  let config: Config;
  let redis: Redis;
  let eventsConn: Redis;
  let workers: RunningWorkers | undefined;

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-hardening-corrupt-'));
    const modelPath = path.join(tmp, 'router.safetensors');
    await saveModel(modelPath, { hidden: 16, params: initParams(16, 11), temperature: 1 });
    // A short lock: a job lost by the worker would come back as stalled within the test's wait.
    config = loadConfig({ MOE_PREFIX: `t-hardening-corrupt-${randomUUID().slice(0, 8)}`, MOE_MODEL: modelPath, JOB_LOCK_MS: '1000' });
    redis = createRedis(config.redisUrl);
    eventsConn = createRedis(config.redisUrl, { role: 'worker' });
  });
  afterAll(async () => {
    await workers?.close();
    if (redis) {
      await clearPrefix(redis, config.prefix);
      await closeRedis(redis);
    }
    if (eventsConn) await closeRedis(eventsConn);
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('fails with the reason, once, and the worker takes the next job', async () => {
    const queue = new Queue(QUEUE_NAMES.fetch, { connection: redis, prefix: config.prefix });
    const events = new QueueEvents(QUEUE_NAMES.fetch, { connection: eventsConn, prefix: config.prefix });
    await events.waitUntilReady();
    try {
      const fetch = (ticker: string) => ({ runId: randomUUID(), ticker, source: 'sim', range: { days: 20 } });
      const corrupt = await queue.add('fetch', fetch('SPY'), { jobId: 'corrupt', attempts: 3 });
      // Before any worker takes it: what a bad write, a partial restore or a hand edit leaves in the job hash.
      await redis.hset(bullJobKey(config.prefix, QUEUE_NAMES.fetch, corrupt.id!), 'data', '{not json');
      const good = await queue.add('fetch', fetch('TLT'), { jobId: 'good' });
      const failed = new Promise<{ jobId: string; failedReason: string }>((resolve) =>
        events.on('failed', (e) => {
          if (e.jobId === 'corrupt') resolve(e);
        }),
      );

      workers = await startWorkers({ config, roles: ['fetch'], logger: createLogger({ name: 'corrupt', level: 'silent' }), featureThreads: 1 });
      await expect(good.waitUntilFinished(events, 30_000)).resolves.toMatchObject({ ticker: 'TLT' });
      const reason = 'Invalid job data: Expected JSON for data but received "{not json"';
      const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('corrupt job never failed')), 10_000).unref());
      expect((await Promise.race([failed, timeout])).failedReason).toBe(reason);

      const state: JobState | 'unknown' = await queue.getJobState('corrupt');
      expect(state).toBe('failed');
      const h = await redis.hmget(bullJobKey(config.prefix, QUEUE_NAMES.fetch, 'corrupt'), 'failedReason', 'atm', 'stc', 'data');
      expect(h[0]).toBe(reason);
      // Permanent: one attempt of three, never counted as stalled; the data stays as it was found.
      expect(h[1]).toBe('1');
      expect(h[2] ?? '0').toBe('0');
      expect(h[3]).toBe('{not json');
    } finally {
      await Promise.allSettled([queue.close(), events.close()]);
    }
  });
});
