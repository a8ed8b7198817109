import type { Job, Queue } from 'bullmq';
import type { Histogram } from 'prom-client';

/**
 * Feeds the durations of completed jobs into a Prometheus histogram, each job once, although every scrape reads
 * the same newest completed jobs again. A histogram's `_count` and `_sum` are counters: counting a job on every
 * scrape that still sees it would make them grow with the scrape rate instead of the job rate.
 *
 * - The first read of a queue only records what is already completed (a baseline): those jobs finished before this
 *   dashboard watched, and counting them would make every restart look like a burst of completions to `rate()`.
 * - Later reads observe the jobs whose ids were not seen before. When every job of a page is new, more finished
 *   since the last scrape than a page holds, so older pages are read until one holds a seen job (or `SCAN_MAX`).
 * - The ids seen are kept in insertion order, refreshed on every read, and the oldest are dropped past `SEEN_MAX`:
 *   a job is dropped only after more than `SEEN_MAX` newer completions pushed it beyond every page a scrape reads,
 *   so memory stays bounded without a job coming back as new.
 *
 * Not counted: more than `SCAN_MAX` completions of one queue between two scrapes (the oldest of them), and a job
 * removed and added again under the same id (BullMQ's `removeOnComplete` trims the oldest, not the newest).
 */

/** Completed jobs per page read. */
export const PAGE_JOBS = 200;
/** Most completed jobs read per queue and scrape; fetch jobs keep 5,000 completed (jobs/job-options.ts). */
export const SCAN_MAX = 5_000;
/** Most job ids remembered per queue. */
export const SEEN_MAX = SCAN_MAX + PAGE_JOBS;

/** Start-to-finish processing time of a finished job, in seconds; undefined when a timestamp is missing. */
export function durationSeconds(job: Job): number | undefined {
  if (job.processedOn === undefined || job.finishedOn === undefined) return undefined;
  return Math.max(0, job.finishedOn - job.processedOn) / 1000;
}

export class JobDurationObserver {
  /** Ids seen per queue; a queue without an entry has not been read yet. */
  private readonly seen = new Map<string, Set<string>>();

  constructor(private readonly histogram: Histogram<'queue'>) {}

  /**
   * Observes the completed jobs of `queue` not seen before. `newest` is the first page (its newest `PAGE_JOBS`
   * completed jobs, newest first), which the caller read anyway.
   */
  async record(queue: Queue, newest: readonly Job[]): Promise<void> {
    const jobs = [...newest];
    const known = this.seen.get(queue.name);
    if (known !== undefined) {
      let page = newest;
      while (page.length === PAGE_JOBS && jobs.length < SCAN_MAX && page.every((j) => j.id === undefined || !known.has(j.id))) {
        page = await queue.getJobs(['completed'], jobs.length, jobs.length + PAGE_JOBS - 1);
        jobs.push(...page);
      }
    }
    // No await from here on: two scrapes in flight at once cannot both find a job new.
    const seen = this.seen.get(queue.name);
    const baseline = seen === undefined;
    const ids = seen ?? new Set<string>();
    // Oldest first, so that insertion order is completion order and trimming drops the oldest.
    for (let i = jobs.length - 1; i >= 0; i--) {
      const job = jobs[i]!;
      if (job.id === undefined) continue;
      const isNew = !ids.delete(job.id);
      ids.add(job.id);
      const secs = durationSeconds(job);
      if (isNew && !baseline && secs !== undefined) this.histogram.observe({ queue: queue.name }, secs);
    }
    for (const id of ids) {
      if (ids.size <= SEEN_MAX) break;
      ids.delete(id);
    }
    this.seen.set(queue.name, ids);
  }
}
