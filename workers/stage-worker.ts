import { Worker, type Job, type JobJson } from 'bullmq';
import { describeValue } from '../src/util/describe.js';
import { boundedReason } from './job.js';

/** Why a job whose stored data is not JSON failed: `Invalid job data: Expected JSON for data but received "{not j…"`. */
export function corruptDataReason(raw: string): string {
  return boundedReason(`Invalid job data: Expected JSON for data but received ${describeValue(raw)}`);
}

/**
 * A BullMQ worker that fails a job whose `data` in Redis is not JSON instead of losing it.
 *
 * BullMQ (6.7) moves a job to active in Redis first and builds it afterwards with `Job.fromJSON`, whose
 * `JSON.parse(data)` throws out of the worker's fetch loop: the worker emits `error` and fetches the next job, while
 * the corrupt one stays active with a lock nobody renews. The stalled checker then returns it to wait, past
 * `maxStalledCount` with a deferred failure, but every worker that takes it throws again before reading that: it
 * went round for good, an error logged every lock period. Here such a job is built with null data and a deferred
 * failure, which BullMQ turns into an `UnrecoverableError` before any processor runs: the job fails on its first
 * attempt with the reason, and the worker goes on.
 */
export class StageWorker extends Worker<unknown> {
  protected override createJob(json: JobJson, jobId: string): Job<unknown> {
    try {
      return super.createJob(json, jobId);
    } catch (err) {
      // Only the data parse is handled; anything else is BullMQ's own error and keeps its path.
      if (!(err instanceof SyntaxError)) throw err;
      const job = super.createJob({ ...json, data: 'null' }, jobId);
      job.deferredFailure = corruptDataReason(json.data);
      return job;
    }
  }
}
