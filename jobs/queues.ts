/** BullMQ queue names, one per pipeline stage. */
export const QUEUE_NAMES = {
  fetch: 'moe-fetch',
  route: 'moe-route',
  report: 'moe-report',
} as const;

export type Role = keyof typeof QUEUE_NAMES;
export const ROLES: readonly Role[] = ['fetch', 'route', 'report'];

/**
 * Queue of cron ticks: BullMQ job schedulers put one job here per tick, and whichever worker takes it enqueues the
 * run. Not a pipeline stage, so not in ROLES; `npm run workers` serves it by default (`--only` can leave it out).
 */
export const SCHEDULE_QUEUE = 'moe-schedule';

/** What a worker process can serve: the three stages and the schedule ticks. */
export type WorkerRole = Role | 'schedule';
export const WORKER_ROLES: readonly WorkerRole[] = [...ROLES, 'schedule'];
