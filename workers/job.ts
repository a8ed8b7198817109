import { UnrecoverableError, type Job } from 'bullmq';
import { PayloadError } from '../jobs/payloads.js';

/**
 * What every processor does with a job before and after its work: validate the payload (a malformed one can never
 * succeed, so it fails for good instead of using up retries) and tell whether a failure is the job's last.
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
