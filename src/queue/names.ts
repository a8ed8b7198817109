/** BullMQ queue names, one per pipeline stage. */
export const QUEUE_NAMES = {
  fetch: 'moe-fetch',
  route: 'moe-route',
  report: 'moe-report',
} as const;

export type Role = keyof typeof QUEUE_NAMES;
export const ROLES: readonly Role[] = ['fetch', 'route', 'report'];
