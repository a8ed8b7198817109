import { UnrecoverableError, type Job } from 'bullmq';
import { SourceError } from '../src/data/errors.js';
import { PayloadError } from '../jobs/payloads.js';
import { jobIds } from '../jobs/keys.js';
import { enterStage, type RunStore, type StageStatus } from '../jobs/run-meta.js';

/**
 * What every processor does with a job before and after its work: validate the payload (a malformed one can never
 * succeed, so it fails for good instead of using up retries), check that the job belongs to its run, bound what a
 * failure stores, and tell whether a failure is the job's last.
 */

/**
 * `validate(job.data)`, or an `UnrecoverableError` (`Invalid <stage> payload: <reason>`) when the payload is
 * malformed. Other errors pass through unchanged.
 */
export function validPayload<T>(job: Job<unknown>, stage: string, validate: (data: unknown) => T): T {
  try {
    return validate(job.data);
  } catch (err) {
    if (err instanceof PayloadError) throw new UnrecoverableError(`Invalid ${stage} payload: ${err.message}`);
    throw err;
  }
}

/** True when BullMQ will not try the job again after `err`: it is unrecoverable, or this was the last attempt. */
export function isFinalAttempt(job: Job<unknown>, err: unknown): boolean {
  return err instanceof UnrecoverableError || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
}

/**
 * Longest failure reason a job stores. BullMQ keeps the reason in the job hash, in the parent's record of a failed
 * child, and the report copies it into both summaries and every page that lists the run: a CSV with a 10 MB first
 * line once cost 86 MB of Redis through one reason (`test/hardening-error-bounds.test.ts`). 500 characters hold
 * every message the pipeline writes, with its excerpt of the input, uncut.
 */
export const MAX_REASON_CHARS = 500;

/**
 * Longest stack kept with an unexpected error. V8 records 10 frames, about 1 KB; BullMQ stores one stack per
 * attempt.
 */
const MAX_STACK_CHARS = 4_000;

/** `text` when short enough, else its head and `… (<n> chars)`, `MAX_REASON_CHARS` characters in all. */
export function boundedReason(text: string): string {
  if (text.length <= MAX_REASON_CHARS) return text;
  const tail = `… (${text.length} chars)`;
  return `${text.slice(0, MAX_REASON_CHARS - tail.length)}${tail}`;
}

/**
 * Failures whose cause is known and named in the message (bad input, a classified source error, a stray job): their
 * stack trace says nothing more, so none is stored.
 */
function isExpected(err: Error): boolean {
  return err instanceof UnrecoverableError || err instanceof SourceError;
}

/**
 * The same error, made fit to store: its message bounded by `boundedReason`, its stack only the message line for an
 * expected failure and at most `MAX_STACK_CHARS` otherwise. BullMQ stores `err.message` as the failed reason and
 * `err.stack` per attempt; the stack was captured with the full message, so it is rebuilt, not just cut. Changed in
 * place, so its class (UnrecoverableError, WaitingError) still steers BullMQ. A thrown non-Error becomes an Error.
 */
export function boundedError(err: unknown): Error {
  if (!(err instanceof Error)) return new Error(boundedReason(String(err)));
  const message = boundedReason(err.message);
  const head = `${err.name}: ${message}`;
  let stack = head;
  if (!isExpected(err)) {
    const at = err.stack?.indexOf('\n    at ') ?? -1;
    if (at >= 0) stack += err.stack!.slice(at, at + MAX_STACK_CHARS);
  }
  err.message = message;
  err.stack = stack;
  return err;
}

/** A stage job that does not belong to the run it names: another job id, or a run that has already ended. */
export class StrayJobError extends UnrecoverableError {
  readonly code = 'STRAY_JOB';
  constructor(message: string) {
    super(`STRAY_JOB: ${message}`);
    this.name = this.constructor.name;
  }
}

/** `a`, `a or b`, `a, b or c`. */
function anyOf(words: readonly string[]): string {
  return words.length < 2 ? (words[0] ?? '') : `${words.slice(0, -1).join(', ')} or ${words.at(-1)!}`;
}

/**
 * Checks that a route or report job is its run's own (`jobIds`; a route job's id names its `shard`), then moves the
 * run to `status` when it is in a state the stage may start or restart from (`STAGE_FROM`), in one step. Throws
 * `StrayJobError` otherwise, having changed nothing. A run whose hash is gone (expired, or a flow enqueued without
 * one) goes on untouched.
 */
export async function enterRunStage(store: RunStore, job: Job<unknown>, runId: string, stage: 'route' | 'report', shard = 0): Promise<void> {
  const own = stage === 'route' ? jobIds.route(runId, shard) : jobIds.report(runId);
  if (job.id !== own) throw new StrayJobError(`Expected job id ${own} for a ${stage} job of run ${runId} but received ${String(job.id)}`);
  const status: StageStatus = stage === 'route' ? 'routing' : 'reporting';
  const refused = await enterStage(store, runId, status);
  if (refused !== undefined) {
    throw new StrayJobError(`Expected run ${runId} to be ${anyOf(refused.allowed)} for its ${stage} job but it is ${refused.status}`);
  }
}
