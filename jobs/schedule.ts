import { createHash } from 'node:crypto';
import { defaultRepeatStrategy, UnrecoverableError, type FlowProducer, type Job, type Queue } from 'bullmq';
import type { RedisClient } from './connection.js';
import type { Logger } from 'pino';
import type { SourceName } from '../src/data/types.js';
import { runKey } from './keys.js';
import { canonicalTickers, enqueueRun, type EnqueuedRun } from './enqueue-run.js';
import { MAX_DAYS, SOURCE_NAMES } from '../src/limits.js';
import { expectedMessage } from '../src/util/describe.js';
import { PayloadError } from './payloads.js';
import { errorText } from '../src/util/errors.js';

/**
 * Cron-scheduled runs through BullMQ job schedulers. A scheduler adds one job per tick to the schedule queue, with
 * a job id made of the scheduler id and the tick time, so however many processes upsert the scheduler or serve the
 * queue, a tick exists once and is taken by one worker. That worker derives the run id from the tick's job id, so a
 * tick retried after a crash re-adds the same flow (same job ids: a no-op) instead of starting a second run.
 */

/** Job data of a tick: everything a run needs, resolved when the schedule was added (any host may take the tick). */
export interface ScheduledRunData {
  /** Universe name or file the tickers came from; shown in listings. */
  universe: string;
  tickers: string[];
  source: SourceName;
  days: number;
}

export interface ScheduleSpec {
  /** Scheduler id, `[a-z0-9][a-z0-9-]{0,63}`; adding with an existing id replaces that schedule. */
  id: string;
  /** Cron pattern, 5 fields (minute first) or 6 (second first). */
  cron: string;
  /** IANA time zone of the pattern. @defaultValue `UTC` */
  tz?: string;
  data: ScheduledRunData;
}

export interface ScheduleInfo {
  id: string;
  cron: string;
  tz: string;
  /** Next tick, ISO timestamp, when known. */
  next: string | undefined;
  universe: string;
  tickers: number;
  source: string;
  days: number;
}

const SCHEDULE_ID = /^[a-z0-9][a-z0-9-]{0,63}$/;
const TICK_NAME = 'scheduled-run';

function fail(field: string, what: string, v: unknown): never {
  throw new PayloadError(field, expectedMessage(what, field, v));
}

export function validateScheduleId(v: unknown): string {
  if (typeof v !== 'string' || !SCHEDULE_ID.test(v)) fail('id', 'schedule id of 1-64 characters a-z 0-9 - (starting with a letter or digit)', v);
  return v;
}

/**
 * Shortest time between two ticks of a schedule. Each tick is a whole run (a fetch per ticker, a route, four figures)
 * over daily bars; a pattern that fires every second, as `* * * * * *` does when a seconds field is added by mistake,
 * would pile up runs faster than any deployment finishes them.
 */
export const MIN_CRON_INTERVAL_MS = 60_000;

/**
 * Ticks sampled for the interval check. A pattern fires more than once a minute only through its seconds field, and
 * every value of that field shows in the first minute that fires, so 61 consecutive ticks reveal the shortest gap.
 */
const INTERVAL_SAMPLES = 61;

function intervalText(ms: number): string {
  return ms === 60_000 ? 'once a minute' : `once every ${ms / 1000} s`;
}

/**
 * Cron pattern with 5 or 6 fields of cron characters, whose values BullMQ's own parser accepts, firing at most once
 * per `minIntervalMs`.
 * @param minIntervalMs - @defaultValue `MIN_CRON_INTERVAL_MS`; tests lower it to see ticks within seconds
 */
export function validateCron(v: unknown, minIntervalMs: number = MIN_CRON_INTERVAL_MS): string {
  if (typeof v !== 'string' || !/^[0-9*/,\-A-Za-z?#L]+( [0-9*/,\-A-Za-z?#L]+){4,5}$/.test(v.trim())) {
    fail('cron', 'cron pattern of 5 or 6 space-separated fields', v);
  }
  const pattern = v.trim();
  // From a fixed instant, so the answer does not depend on when the schedule is added; UTC, since every time zone
  // offset is whole minutes and cannot bring two ticks closer than a minute.
  let shortest = Number.POSITIVE_INFINITY;
  try {
    let t = defaultRepeatStrategy(Date.UTC(2025, 0, 1), { pattern });
    for (let i = 0; i < INTERVAL_SAMPLES && t !== undefined; i++) {
      const next = defaultRepeatStrategy(t, { pattern });
      if (next !== undefined) shortest = Math.min(shortest, next - t);
      t = next;
    }
  } catch (err) {
    // The parser BullMQ schedules with rejects values (minute 61, day 0) in its own wording; name the input too.
    throw new PayloadError('cron', `Expected a valid cron pattern for cron but received ${JSON.stringify(pattern)}: ${errorText(err)}`);
  }
  if (shortest < minIntervalMs) {
    throw new PayloadError(
      'cron',
      `Expected cron pattern firing at most ${intervalText(minIntervalMs)} for cron but received ${JSON.stringify(pattern)} (ticks ${shortest / 1000} s apart)`,
    );
  }
  return pattern;
}

export function validateTimeZone(v: unknown): string {
  if (typeof v !== 'string' || v === '') fail('tz', 'IANA time zone such as America/New_York', v);
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: v });
  } catch {
    fail('tz', 'IANA time zone such as America/New_York', v);
  }
  return v;
}

export function validateScheduledRunData(v: unknown): ScheduledRunData {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail('data', 'object', v);
  const d = v as Record<string, unknown>;
  if (typeof d.universe !== 'string' || d.universe === '' || d.universe.length > 300) fail('universe', 'universe name or file of 1-300 characters', d.universe);
  if (!Array.isArray(d.tickers)) fail('tickers', 'array of tickers', d.tickers);
  const tickers = canonicalTickers(d.tickers as string[]);
  if (typeof d.source !== 'string' || !(SOURCE_NAMES as readonly string[]).includes(d.source) || d.source === 'csv') {
    fail('source', 'one of sim, yahoo (a csv folder is not shared between hosts)', d.source);
  }
  if (typeof d.days !== 'number' || !Number.isSafeInteger(d.days) || d.days < 1 || d.days > MAX_DAYS) fail('days', `integer in 1..${MAX_DAYS}`, d.days);
  return { universe: d.universe, tickers, source: d.source as SourceName, days: d.days };
}

/**
 * Adds or replaces a schedule; returns when its first tick is due.
 * @param opts.minIntervalMs - shortest allowed time between ticks. @defaultValue `MIN_CRON_INTERVAL_MS`
 */
export async function addSchedule(queue: Queue, spec: ScheduleSpec, opts: { minIntervalMs?: number } = {}): Promise<{ id: string; next: string | undefined }> {
  const id = validateScheduleId(spec.id);
  const cron = validateCron(spec.cron, opts.minIntervalMs);
  const tz = validateTimeZone(spec.tz ?? 'UTC');
  const data = validateScheduledRunData(spec.data);
  try {
    await queue.upsertJobScheduler(id, { pattern: cron, tz }, { name: TICK_NAME, data, opts: { attempts: 3, backoff: { type: 'exponential', delay: 1000 }, removeOnComplete: { count: 200 }, removeOnFail: { count: 200 } } });
  } catch (err) {
    // BullMQ's cron parser rejects values (minute 61, day 0) with its own wording; name the input instead.
    throw new PayloadError('cron', `Expected a valid cron pattern for cron but received ${JSON.stringify(cron)}: ${errorText(err)}`);
  }
  const next = (await queue.getJobScheduler(id))?.next;
  return { id, next: next === undefined ? undefined : new Date(next).toISOString() };
}

export async function listSchedules(queue: Queue): Promise<ScheduleInfo[]> {
  const all = await queue.getJobSchedulers(0, -1, true);
  return all.map((s) => {
    const d = (s.template?.data ?? {}) as Partial<ScheduledRunData>;
    return {
      id: s.key,
      cron: s.pattern ?? `every ${s.every} ms`,
      tz: s.tz ?? 'UTC',
      next: s.next === undefined ? undefined : new Date(s.next).toISOString(),
      universe: d.universe ?? '?',
      tickers: Array.isArray(d.tickers) ? d.tickers.length : 0,
      source: d.source ?? '?',
      days: d.days ?? 0,
    };
  });
}

/** Removes a schedule; false when there was none with this id. Ticks already taken by a worker still run. */
export async function removeSchedule(queue: Queue, id: string): Promise<boolean> {
  return queue.removeJobScheduler(validateScheduleId(id));
}

/**
 * Run id of a tick: a UUID-shaped digest of the prefix and the tick's job id. Generated, never typed by a person,
 * and the same on every attempt at the same tick.
 */
export function runIdForTick(prefix: string, tickJobId: string): string {
  const h = createHash('sha256').update(`${prefix}\n${tickJobId}`).digest('hex');
  // Version 4 and variant bits set, so the id is a well-formed UUID like the random ones.
  const v = `4${h.slice(13, 16)}`;
  const variant = ((parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16) + h.slice(17, 20);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${v}-${variant}-${h.slice(20, 32)}`;
}

export interface ScheduleDeps {
  flow: FlowProducer;
  redis: RedisClient;
  prefix: string;
  runTtlSeconds: number;
  /** Tickers per shard of the runs it enqueues (`Config.shardSize`). @defaultValue `DEFAULT_SHARD_SIZE` (1000) */
  shardSize?: number;
  logger: Logger;
}

/** Processor of the schedule queue: one tick → one run (the same run on a retried tick). */
export function createScheduleProcessor(deps: ScheduleDeps): (job: Job<unknown>) => Promise<{ runId: string; tickers: number }> {
  return async (job) => {
    let data: ScheduledRunData;
    try {
      data = validateScheduledRunData(job.data);
    } catch (err) {
      if (err instanceof PayloadError) throw new UnrecoverableError(`Invalid scheduled run: ${err.message}`);
      throw err;
    }
    if (job.id === undefined) throw new UnrecoverableError('Invalid scheduled run: the tick job has no id');
    const runId = runIdForTick(deps.prefix, job.id);
    const run: EnqueuedRun = await enqueueRun(
      { flow: deps.flow, redis: deps.redis, prefix: deps.prefix, runTtlSeconds: deps.runTtlSeconds, ...(deps.shardSize === undefined ? {} : { shardSize: deps.shardSize }) },
      { tickers: data.tickers, source: data.source, range: { days: data.days } },
      { runId },
    );
    deps.logger.info({ runId, scheduler: job.repeatJobKey, tick: job.id, tickers: run.tickers.length }, 'scheduled run enqueued');
    return { runId, tickers: run.tickers.length };
  };
}

/** True when the run of this tick already has metadata (used by tests and tools). */
export async function tickRunExists(redis: RedisClient, prefix: string, tickJobId: string): Promise<boolean> {
  return (await redis.exists(runKey(prefix, runIdForTick(prefix, tickJobId)))) === 1;
}
