import type { JobsOptions } from 'bullmq';

/**
 * Retry and retention per stage. Retention is trimmed by age and count so a cron-driven service never grows Redis
 * without bound; parents keep children's return values and failure reasons in their own hashes, so removing a
 * finished child never loses what the next stage needs.
 */

const HOUR = 3600;
const DAY = 24 * HOUR;

export const FETCH_JOB_OPTIONS: JobsOptions = {
  // Network sources fail transiently (429, 5xx); a permanent problem throws UnrecoverableError and skips these.
  attempts: 3,
  backoff: { type: 'exponential', delay: 1_000 },
  // A failed ticker moves to the route job's ignored failures instead of blocking the run.
  ignoreDependencyOnFailure: true,
  removeOnComplete: { age: HOUR, count: 5_000 },
  removeOnFail: { age: DAY, count: 5_000 },
};

export const ROUTE_JOB_OPTIONS: JobsOptions = {
  attempts: 2,
  backoff: { type: 'fixed', delay: 2_000 },
  // When routing fails for good the report job still runs and reports every ticker as failed with the reason.
  ignoreDependencyOnFailure: true,
  removeOnComplete: { age: DAY, count: 1_000 },
  removeOnFail: { age: 7 * DAY, count: 1_000 },
};

export const REPORT_JOB_OPTIONS: JobsOptions = {
  attempts: 2,
  backoff: { type: 'fixed', delay: 2_000 },
  // Kept a week: `enqueue` and dashboards read the final state of a run from its report job.
  removeOnComplete: { age: 7 * DAY, count: 1_000 },
  removeOnFail: { age: 7 * DAY, count: 1_000 },
};

/** Name of the gate job (in the route queue; route workers complete it at once). */
export const GATE_JOB_NAME = 'gate';

export const GATE_DELAY_MS = 15 * 60_000;

/**
 * The report's gate: a child that holds the report back while the shards are still being added, one flow each
 * (enqueue-run.ts). It is added delayed and removed once the last shard is in, so it never runs; if the enqueuing
 * process dies first, the delay runs out, a route worker completes it and the report goes ahead with the shards that
 * were added, listing the others' tickers as failed. The delay is far longer than adding 1,000 shards takes (about
 * a minute for 100,000 tickers).
 */
export const GATE_JOB_OPTIONS: JobsOptions = {
  delay: GATE_DELAY_MS,
  attempts: 3,
  backoff: { type: 'fixed', delay: 1_000 },
  ignoreDependencyOnFailure: true,
  removeOnComplete: { age: HOUR, count: 1_000 },
  removeOnFail: { age: DAY, count: 1_000 },
};
