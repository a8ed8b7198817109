import { describe, expect, it } from 'vitest';
import { canonicalTickers } from '../jobs/enqueue-run.js';
import {
  PayloadError,
  validateFetchJobData,
  validateFetchResult,
  validateReportJobData,
  validateRouteJobData,
} from '../jobs/payloads.js';
import { featureKey, isRunId, jobIds, runKey, shardFromRouteJobKey, shardKey, tickerFromFetchJobKey } from '../jobs/keys.js';

const RUN = '0b6f3c1e-6a53-4c1b-9d7a-2f0e8c4a9b11';
const good = { runId: RUN, ticker: 'AAPL', source: 'sim', range: { days: 60 } };

function fieldOf(fn: () => unknown): { field: string; message: string } {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(PayloadError);
    return { field: (e as PayloadError).field, message: (e as PayloadError).message };
  }
  throw new Error('expected a PayloadError');
}

describe('fetch payload', () => {
  it('accepts a well-formed payload and keeps optional fields', () => {
    expect(validateFetchJobData(good)).toEqual(good);
    const csv = { ...good, source: 'csv', dataDir: '/data', range: { days: 5, end: '2024-02-29' } };
    expect(validateFetchJobData(csv)).toEqual(csv);
    expect(validateFetchJobData({ ...good, seed: 42 }).seed).toBe(42);
  });

  it.each([
    ['not an object', 'x', 'data', 'Expected object for data but received "x"'],
    ['run id from user text', { ...good, runId: '../../etc' }, 'runId', 'Expected run id (lower-case UUID) for runId but received "../../etc"'],
    ['lower-case ticker', { ...good, ticker: 'aapl' }, 'ticker', 'for ticker but received "aapl"'],
    ['ticker with a colon', { ...good, ticker: 'A:B' }, 'ticker', 'for ticker but received "A:B"'],
    ['unknown source', { ...good, source: 'ftp' }, 'source', 'Expected one of sim, csv, yahoo for source but received "ftp"'],
    ['days not an integer', { ...good, range: { days: 1.5 } }, 'range.days', 'Expected integer in 1..2520 for range.days but received 1.5 of type number'],
    ['days as string', { ...good, range: { days: '60' } }, 'range.days', 'received "60"'],
    ['impossible end date', { ...good, range: { days: 5, end: '2023-02-30' } }, 'range.end', 'Expected date YYYY-MM-DD for range.end'],
    ['month 13', { ...good, range: { days: 5, end: '2024-13-01' } }, 'range.end', 'Expected date YYYY-MM-DD for range.end'],
    ['csv without a folder', { ...good, source: 'csv' }, 'dataDir', 'source csv needs one'],
    ['relative folder', { ...good, source: 'csv', dataDir: 'data' }, 'dataDir', 'Expected absolute folder path for dataDir'],
    ['negative seed', { ...good, seed: -1 }, 'seed', 'for seed but received -1 of type number'],
  ])('rejects %s naming the field', (_name, payload, field, message) => {
    const got = fieldOf(() => validateFetchJobData(payload));
    expect(got.field).toBe(field);
    expect(got.message).toContain(message);
  });
});

describe('route and report payloads', () => {
  it('accept well-formed payloads', () => {
    expect(validateRouteJobData({ runId: RUN, shard: 2, tickers: ['A', 'B'] })).toEqual({ runId: RUN, shard: 2, tickers: ['A', 'B'] });
    const rep = { runId: RUN, source: 'yahoo', createdAt: '2026-01-02T03:04:05.000Z', shards: 3, shardSize: 1000 };
    expect(validateReportJobData(rep)).toEqual(rep);
  });

  it('reject bad ticker lists and timestamps', () => {
    expect(fieldOf(() => validateRouteJobData({ runId: RUN, tickers: [] })).field).toBe('tickers');
    expect(fieldOf(() => validateRouteJobData({ runId: RUN, tickers: ['A', 'A'] })).message).toContain('without duplicates');
    expect(fieldOf(() => validateRouteJobData({ runId: RUN, tickers: ['A', 7] })).field).toBe('tickers[1]');
    const rep = { runId: RUN, source: 'sim', createdAt: 'yesterday', shards: 1, shardSize: 1000 };
    expect(fieldOf(() => validateReportJobData(rep)).field).toBe('createdAt');
  });

  it('reject a route job without its shard and a report job without a valid shard plan', () => {
    const route = fieldOf(() => validateRouteJobData({ runId: RUN, tickers: ['A'] }));
    expect([route.field, route.message]).toEqual(['shard', 'Expected integer in 0..999 for shard but received undefined']);
    expect(fieldOf(() => validateRouteJobData({ runId: RUN, shard: 1.5, tickers: ['A'] })).field).toBe('shard');
    const rep = { runId: RUN, source: 'sim', createdAt: '2026-01-02T03:04:05.000Z', shards: 1, shardSize: 1000 };
    // The ticker list of a run of up to 100,000 tickers is not a payload field: the report reads it from the run hash.
    expect(validateReportJobData({ ...rep, tickers: ['SPY'] })).toEqual(rep);
    expect(fieldOf(() => validateReportJobData({ ...rep, shards: 0 })).message).toBe('Expected integer in 1..1000 for shards but received 0 of type number');
    expect(fieldOf(() => validateReportJobData({ ...rep, shardSize: 10_001 })).message).toBe('Expected integer in 1..10000 for shardSize but received 10001 of type number');
    expect(fieldOf(() => validateReportJobData({ runId: RUN, source: 'sim', createdAt: rep.createdAt })).field).toBe('shards');
  });

  it('checks fetch results read back by the route job', () => {
    const r = { key: 'k', ticker: 'TLT', days: 3, class: 'Fixed Income', quality: { nulls: 0, duplicates: 1, gaps: 2, reordered: 0 } };
    expect(validateFetchResult(r)).toEqual(r);
    expect(fieldOf(() => validateFetchResult({ ...r, class: 'Bonds' })).field).toBe('result.class');
    expect(fieldOf(() => validateFetchResult({ ...r, quality: { nulls: 0 } })).field).toBe('result.quality.duplicates');
  });
});

describe('tickers from user input', () => {
  it('upper-cases, trims and de-duplicates in order', () => {
    expect(canonicalTickers(['aapl', ' TLT', 'AAPL', 'gc=f', 'brk.b'])).toEqual(['AAPL', 'TLT', 'GC=F', 'BRK.B']);
  });

  it('names the position of a bad ticker', () => {
    const got = fieldOf(() => canonicalTickers(['SPY', 'bad/../x']));
    expect(got.field).toBe('tickers[1]');
    expect(got.message).toContain('"bad/../x"');
    expect(fieldOf(() => canonicalTickers([])).field).toBe('tickers');
  });
});

describe('keys and job ids', () => {
  it('builds keys under the prefix and job ids without colons', () => {
    expect(runKey('moe', RUN)).toBe(`moe:run:${RUN}`);
    expect(featureKey('moe', RUN, 'BRK.B')).toBe(`moe:run:${RUN}:feat:BRK.B`);
    expect(shardKey('p', RUN, 12)).toBe(`p:run:${RUN}:shard:12`);
    expect(jobIds.route(RUN, 12)).toBe(`route_${RUN}_12`);
    for (const id of [jobIds.fetch(RUN, 'GC=F'), jobIds.route(RUN, 0), jobIds.report(RUN)]) expect(id).not.toContain(':');
  });

  it('parses the ticker back from a fetch job key or id', () => {
    expect(tickerFromFetchJobKey(`moe:moe-fetch:${jobIds.fetch(RUN, 'BRK.B')}`)).toBe('BRK.B');
    expect(tickerFromFetchJobKey(jobIds.fetch(RUN, '^VIX'))).toBe('^VIX');
    expect(tickerFromFetchJobKey(`moe:moe-route:${jobIds.route(RUN, 0)}`)).toBeUndefined();
    expect(tickerFromFetchJobKey('moe:moe-fetch:fetch_notauuid_AAPL')).toBeUndefined();
  });

  it('parses the shard back from a route job key or id', () => {
    expect(shardFromRouteJobKey(`moe:moe-route:${jobIds.route(RUN, 7)}`)).toBe(7);
    expect(shardFromRouteJobKey(jobIds.route(RUN, 0))).toBe(0);
    expect(shardFromRouteJobKey(`moe:moe-fetch:${jobIds.fetch(RUN, 'SPY')}`)).toBeUndefined();
    expect(shardFromRouteJobKey(`route_${RUN}_07`)).toBeUndefined();
    expect(shardFromRouteJobKey(`route_${RUN}`)).toBeUndefined();
  });

  it('recognises only lower-case UUIDs as run ids', () => {
    expect(isRunId(RUN)).toBe(true);
    expect(isRunId(RUN.toUpperCase())).toBe(false);
    expect(isRunId(`${RUN}x`)).toBe(false);
  });
});
