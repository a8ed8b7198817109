import { mkdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Queue, UnrecoverableError, WaitingError } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPipeline, type TestPipeline } from './helpers/pipeline.js';
import { REPORT_FILES } from '../src/report/types.js';
import { SourceError } from '../src/data/errors.js';
import { parseBarsCsv, parseLabelsCsv } from '../src/data/sources/csv.js';
import { boundedError, boundedReason, MAX_REASON_CHARS } from '../workers/job.js';
import { corruptDataReason } from '../workers/stage-worker.js';
import { jobIds } from '../jobs/keys.js';
import { QUEUE_NAMES } from '../jobs/queues.js';

/**
 * A CSV whose first line is 10 MB once put a 10 MB reason into the fetch job (failedReason and stack trace), the
 * route job's record of its failed child, both summaries and the run page: about 70 MB of Redis per such file.
 * Every stored reason now quotes a short excerpt.
 */

const TEN_MB = 10 * 1024 * 1024;
/** The bound `workers/job.ts` puts on a stored failure reason. */
const REASON_BOUND = 500;
const ONE_MB = 'y'.repeat(1024 * 1024);

async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)![1]);
}

/** Bytes Redis holds for every key of a prefix (MEMORY USAGE, all samples). */
async function prefixBytes(redis: Redis, prefix: string): Promise<number> {
  let total = 0;
  for await (const keys of redis.scanStream({ match: `${prefix}:*`, count: 500 })) {
    for (const k of keys as string[]) total += Number((await redis.call('MEMORY', 'USAGE', k, 'SAMPLES', '0')) ?? 0);
  }
  return total;
}

describe('a CSV with a 10 MB first line', () => {
  let p: TestPipeline;
  let dataDir: string;

  beforeAll(async () => {
    p = await startTestPipeline('hardening-bounds');
    dataDir = path.join(p.tmp, 'csv');
    await mkdir(dataDir);
    await writeFile(path.join(dataDir, 'HUGE.csv'), `${'x'.repeat(TEN_MB)}\n2024-01-02,1,1,1,1,1,100\n`);
  });
  afterAll(async () => {
    await p?.close();
  });

  it('fails its ticker with a short reason everywhere the reason is stored', async () => {
    const before = await usedMemory(p.redis);
    const { run, meta } = await p.run({ tickers: ['HUGE'], source: 'csv', dataDir, range: { days: 20 } });
    const grown = (await usedMemory(p.redis)) - before;
    const held = await prefixBytes(p.redis, p.config.prefix);
    console.log(`10 MB csv line: used_memory grew ${(grown / 1024).toFixed(0)} KiB; prefix holds ${(held / 1024).toFixed(0)} KiB`);

    expect(meta.status).toBe('failed');
    const s = await p.summary(meta);
    expect(s.failed).toHaveLength(1);
    const reason = s.failed[0]!.reason;
    expect(reason).toMatch(/^BAD_DATA: Expected header with date,open,high,low,close\[,adj_close,volume\] for .*HUGE\.csv but received "x{40}"… \(10485760 chars\) \(no date, open, high, low, close\)$/);

    for (const f of [REPORT_FILES.summaryJson, REPORT_FILES.summaryMd]) {
      expect((await stat(path.join(meta.reportDir!, f))).size, f).toBeLessThan(16 * 1024);
    }

    const fetchQ = new Queue(QUEUE_NAMES.fetch, { connection: p.redis, prefix: p.config.prefix });
    try {
      const job = (await fetchQ.getJob(jobIds.fetch(run.runId, 'HUGE')))!;
      expect(await job.getState()).toBe('failed');
      expect(job.failedReason).toBe(reason);
      expect(job.failedReason.length).toBeLessThanOrEqual(REASON_BOUND);
      // An expected failure stores its message line, not a stack: the trace of a known cause says nothing more.
      for (const trace of job.stacktrace ?? []) {
        expect(trace.length).toBeLessThanOrEqual(REASON_BOUND + 40);
        expect(trace).not.toContain('\n');
      }
    } finally {
      await fetchQ.close();
    }

    // Before: used_memory +70 MB and the prefix about 40 MB (the reason in the job hash, its stack trace and the
    // route job's record of the failed child). The run's own keys are a few KiB.
    expect(held).toBeLessThan(256 * 1024);
    expect(grown).toBeLessThan(4 * 1024 * 1024);
  });
});

describe('messages that quote input', () => {
  it('quote a short excerpt of a huge CSV header or labels line', () => {
    expect(() => parseBarsCsv(`${ONE_MB}\n`, 'BIG.csv')).toThrow(
      new TypeError(`Expected header with date,open,high,low,close[,adj_close,volume] for BIG.csv but received "${'y'.repeat(40)}"… (1048576 chars) (no date, open, high, low, close)`),
    );
    expect(() => parseLabelsCsv(`${ONE_MB}\n`, 'labels.csv', true)).toThrow(
      `Expected a header with columns ticker,class for labels.csv but received "${'y'.repeat(40)}"… (1048576 chars)`,
    );
    expect(() => parseLabelsCsv(`ticker,class\nSPY,${ONE_MB}\n`, 'labels.csv', true)).toThrow(
      `Expected a ticker and one of Equities, Fixed Income, Commodities, Derivatives on line 2 of labels.csv but received "SPY,${'y'.repeat(36)}"… (1048580 chars)`,
    );
  });

  it('names corrupt job data by an excerpt', () => {
    expect(corruptDataReason('{not json')).toBe('Invalid job data: Expected JSON for data but received "{not json"');
    expect(corruptDataReason(`{${ONE_MB}`)).toBe(`Invalid job data: Expected JSON for data but received "{${'y'.repeat(39)}"… (1048577 chars)`);
  });
});

describe('bounded failure reasons', () => {
  it('keeps short reasons and cuts long ones to the bound, saying how long they were', () => {
    expect(MAX_REASON_CHARS).toBe(REASON_BOUND);
    expect(boundedReason('NO_DATA: short')).toBe('NO_DATA: short');
    const exact = 'z'.repeat(REASON_BOUND);
    expect(boundedReason(exact)).toBe(exact);
    const cut = boundedReason(ONE_MB);
    expect(cut).toHaveLength(REASON_BOUND);
    expect(cut.endsWith('y… (1048576 chars)')).toBe(true);
  });

  it('stores an expected failure as its message line and an unexpected one with a bounded stack', () => {
    const permanent = boundedError(new UnrecoverableError(`BAD_DATA: ${ONE_MB}`));
    expect(permanent).toBeInstanceOf(UnrecoverableError);
    expect(permanent.message).toHaveLength(REASON_BOUND);
    expect(permanent.stack).toBe(`UnrecoverableError: ${permanent.message}`);

    const source = boundedError(new SourceError('FETCH_FAILED', 'SPY', 'Expected chart data for SPY but received HTTP 503: busy'));
    expect(source.stack).toBe('SourceError: Expected chart data for SPY but received HTTP 503: busy');

    const bug = boundedError(new RangeError(`multi\nline ${ONE_MB}`));
    expect(bug).toBeInstanceOf(RangeError);
    expect(bug.message).toHaveLength(REASON_BOUND);
    expect(bug.stack!.startsWith(`RangeError: ${bug.message}\n    at `)).toBe(true);
    expect(bug.stack!.length).toBeLessThanOrEqual(REASON_BOUND + 20 + 4_000);
  });

  it('leaves the errors that steer BullMQ as they are and turns a thrown value into an Error', () => {
    const waiting = new WaitingError();
    expect(boundedError(waiting)).toBe(waiting);
    expect(waiting.message).toBe(new WaitingError().message);
    const thrown = boundedError(ONE_MB);
    expect(thrown).toBeInstanceOf(Error);
    expect(thrown.message).toHaveLength(REASON_BOUND);
  });
});
