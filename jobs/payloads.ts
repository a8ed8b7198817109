import { isDomain, type Domain } from '../src/domains.js';
import type { DataQuality, FetchRange } from '../src/data/types.js';
import { MAX_DAYS, MAX_SHARD_SIZE, MAX_SHARDS, MAX_TICKERS, SOURCE_NAMES, TICKER_PATTERN, TICKER_PATTERN_TEXT, type SourceName } from '../src/limits.js';
import type { DailyAggregate, FailedTicker, TickerSummary } from '../src/report/types.js';
import { validateDailyAggregate } from '../src/report/daily.js';
import { ReportError } from '../src/report/errors.js';
import { expectedMessage } from '../src/util/describe.js';
import { isRunId } from './keys.js';

/**
 * Payloads and results of the pipeline's jobs, with hand-written validators. Job data crosses process and version
 * boundaries (any host may enqueue), so every processor validates what it receives; a malformed payload is
 * permanent, and the error names the field that is wrong.
 */


export class PayloadError extends Error {
  readonly code = 'BAD_PAYLOAD';
  /** Dotted path of the offending field, e.g. `range.days`. */
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.name = this.constructor.name;
    this.field = field;
  }
}

export interface FetchJobData {
  runId: string;
  /** Canonical ticker (already passed `validateTicker`). */
  ticker: string;
  source: SourceName;
  range: FetchRange;
  /** Absolute folder of `<TICKER>.csv` files; required for `csv`. */
  dataDir?: string;
  /** Simulator seed; only `sim` uses it. */
  seed?: number;
}

export interface FetchResult {
  /** Redis key of the feature block. */
  key: string;
  ticker: string;
  /** Routed days in the block. */
  days: number;
  /** Routed days the run asked for (`range.days`); absent from fetch workers of older releases. */
  requestedDays?: number;
  class?: Domain;
  subtype?: string;
  quality: DataQuality;
  /** Context series (context.ts) that were missing when this ticker's features were computed. */
  contextMissing?: string[];
}

export interface RouteJobData {
  runId: string;
  /** The run's shard this job routes, 0-based (`jobIds.route(runId, shard)`). */
  shard: number;
  /** The shard's tickers (1..`MAX_SHARD_SIZE`) in request order; fixes the order of its part of the summary. */
  tickers: string[];
}

/**
 * One shard's part of a run, stored by its route job under `shardKey` (JSON, feature TTL) and merged by the report:
 * per-ticker rows, and per-day sums whose size does not grow with the shard's tickers.
 */
export interface ShardOutput {
  runId: string;
  shard: number;
  /** Routed tickers of the shard, in request order. */
  tickers: TickerSummary[];
  /** The shard's tickers that could not be routed, with their reasons. */
  failed: FailedTicker[];
  /** Per-day sums of the routed tickers' series (the time-series figure). */
  daily: DailyAggregate;
  backend: string;
  model: { path: string; hidden: number; featureSpec: string; members?: number };
  tokens: number;
  /** Enqueue to this shard's route start: its fetch stage including queue waits. */
  fetchMs: number;
  /** Whole route job: reading blocks, forward pass, aggregation, storing the output. */
  routeMs: number;
  /** The native forward passes alone. */
  forwardMs: number;
  /** Context series (context.ts) missing for at least one routed ticker; empty when every ticker had the full set. */
  contextMissing: string[];
}

/** What a route job returns (and BullMQ keeps): where its shard's output is, with the counts and timings dashboards read. */
export interface RouteResult {
  runId: string;
  shard: number;
  /** Key of the shard's `ShardOutput`. */
  outputKey: string;
  /** Tickers routed and failed in the shard. */
  routed: number;
  failed: number;
  backend: string;
  tokens: number;
  fetchMs: number;
  routeMs: number;
  forwardMs: number;
}

export interface ReportJobData {
  runId: string;
  source: SourceName;
  /** ISO timestamp of the enqueue. */
  createdAt: string;
  /**
   * Shards of the run (1..`MAX_SHARDS`), each of `shardSize` tickers of the run's list in order, the last one the
   * rest. The list itself (up to `MAX_TICKERS`) stays out of the payload: the report reads it from the run hash.
   */
  shards: number;
  shardSize: number;
}

export interface ReportResult {
  reportDir: string;
  files: string[];
  routed: number;
  failed: number;
}

// ---------------------------------------------------------------------------------------------------------------

function fail(field: string, what: string, v: unknown): never {
  throw new PayloadError(field, expectedMessage(what, field, v));
}

function record(v: unknown, field: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(field, 'object', v);
  return v as Record<string, unknown>;
}

function runId(v: unknown, field = 'runId'): string {
  if (!isRunId(v)) fail(field, 'run id (lower-case UUID)', v);
  return v;
}

/** Canonical tickers only: what `validateTicker` returns (upper case, so safe in keys and ids). */
function ticker(v: unknown, field: string): string {
  if (typeof v !== 'string' || !TICKER_PATTERN.test(v)) fail(field, `canonical ticker matching ${TICKER_PATTERN_TEXT}`, v);
  return v;
}

function int(v: unknown, field: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) fail(field, `integer in ${min}..${max}`, v);
  return v;
}

const ISO_DATE = /^\d{4}-\d{2}-\d{2}$/;

/** True for a real calendar date `YYYY-MM-DD` (2023-02-30 and 2024-13-01 are not). */
export function isIsoDate(v: unknown): v is string {
  if (typeof v !== 'string' || !ISO_DATE.test(v)) return false;
  const ms = Date.parse(`${v}T00:00:00Z`);
  return Number.isFinite(ms) && new Date(ms).toISOString().slice(0, 10) === v;
}

function isoDate(v: unknown, field: string): string {
  if (!isIsoDate(v)) fail(field, 'date YYYY-MM-DD', v);
  return v;
}

function isoTimestamp(v: unknown, field: string): string {
  if (typeof v !== 'string' || !Number.isFinite(Date.parse(v))) fail(field, 'ISO timestamp', v);
  return v;
}

function source(v: unknown, field = 'source'): SourceName {
  if (typeof v !== 'string' || !(SOURCE_NAMES as readonly string[]).includes(v)) fail(field, `one of ${SOURCE_NAMES.join(', ')}`, v);
  return v as SourceName;
}

function tickerList(v: unknown, field: string, max = MAX_TICKERS): string[] {
  if (!Array.isArray(v) || v.length === 0 || v.length > max) fail(field, `array of 1..${max} tickers`, v);
  const out = v.map((t, i) => ticker(t, `${field}[${i}]`));
  if (new Set(out).size !== out.length) fail(field, 'tickers without duplicates', v);
  return out;
}

export function validateRange(v: unknown, field = 'range'): FetchRange {
  const r = record(v, field);
  const days = int(r.days, `${field}.days`, 1, MAX_DAYS);
  if (r.end === undefined) return { days };
  return { days, end: isoDate(r.end, `${field}.end`) };
}

export function validateFetchJobData(v: unknown): FetchJobData {
  const d = record(v, 'data');
  const out: FetchJobData = {
    runId: runId(d.runId),
    ticker: ticker(d.ticker, 'ticker'),
    source: source(d.source),
    range: validateRange(d.range),
  };
  if (d.dataDir !== undefined) {
    if (typeof d.dataDir !== 'string' || !d.dataDir.startsWith('/')) fail('dataDir', 'absolute folder path', d.dataDir);
    out.dataDir = d.dataDir;
  }
  if (out.source === 'csv' && out.dataDir === undefined) fail('dataDir', 'absolute folder path (source csv needs one)', d.dataDir);
  if (d.seed !== undefined) out.seed = int(d.seed, 'seed', 0, 0xffffffff);
  return out;
}

/** The run's tickers, as the run hash stores them (`RunMeta.tickers`), checked as strictly as a payload. */
export function validateRunTickers(v: unknown, field = 'tickers'): string[] {
  return tickerList(v, field);
}

export function validateRouteJobData(v: unknown): RouteJobData {
  const d = record(v, 'data');
  const id = runId(d.runId);
  const tickers = tickerList(d.tickers, 'tickers', MAX_SHARD_SIZE);
  return { runId: id, shard: int(d.shard, 'shard', 0, MAX_SHARDS - 1), tickers };
}

export function validateReportJobData(v: unknown): ReportJobData {
  const d = record(v, 'data');
  return {
    runId: runId(d.runId),
    source: source(d.source),
    createdAt: isoTimestamp(d.createdAt, 'createdAt'),
    shards: int(d.shards, 'shards', 1, MAX_SHARDS),
    shardSize: int(d.shardSize, 'shardSize', 1, MAX_SHARD_SIZE),
  };
}

function quality(v: unknown, field: string): DataQuality {
  const q = record(v, field);
  const n = (k: keyof DataQuality) => int(q[k], `${field}.${k}`, 0, Number.MAX_SAFE_INTEGER);
  const out: DataQuality = { nulls: n('nulls'), duplicates: n('duplicates'), gaps: n('gaps'), reordered: n('reordered') };
  // Counts a source may leave out: kept when present, so the summaries can show what was read and dropped.
  for (const k of ['rows', 'malformed', 'splits'] as const) if (q[k] !== undefined) out[k] = n(k);
  return out;
}

/** Checks a fetch job's return value as the route job reads it (the fetch worker may run another version). */
export function validateFetchResult(v: unknown, field = 'result'): FetchResult {
  const r = record(v, field);
  if (typeof r.key !== 'string' || r.key === '') fail(`${field}.key`, 'Redis key', r.key);
  const out: FetchResult = {
    key: r.key,
    ticker: ticker(r.ticker, `${field}.ticker`),
    days: int(r.days, `${field}.days`, 0, Number.MAX_SAFE_INTEGER),
    quality: quality(r.quality, `${field}.quality`),
  };
  if (r.requestedDays !== undefined) out.requestedDays = int(r.requestedDays, `${field}.requestedDays`, 1, Number.MAX_SAFE_INTEGER);
  if (r.class !== undefined) {
    if (typeof r.class !== 'string' || !isDomain(r.class)) fail(`${field}.class`, 'domain name', r.class);
    out.class = r.class;
  }
  if (r.subtype !== undefined) {
    if (typeof r.subtype !== 'string') fail(`${field}.subtype`, 'string', r.subtype);
    out.subtype = r.subtype;
  }
  if (r.contextMissing !== undefined) {
    if (!Array.isArray(r.contextMissing) || !r.contextMissing.every((t) => typeof t === 'string')) {
      fail(`${field}.contextMissing`, 'array of tickers', r.contextMissing);
    }
    out.contextMissing = r.contextMissing as string[];
  }
  return out;
}

/**
 * Checks a shard's output as the report reads it back from Redis: the envelope, every failure and the per-day sums;
 * the per-ticker summaries only as an array, since the route stage made them.
 */
export function validateShardOutput(v: unknown, field = 'shardOutput'): ShardOutput {
  const r = record(v, field);
  runId(r.runId, `${field}.runId`);
  int(r.shard, `${field}.shard`, 0, MAX_SHARDS - 1);
  if (!Array.isArray(r.tickers)) fail(`${field}.tickers`, 'array', r.tickers);
  if (!Array.isArray(r.failed)) fail(`${field}.failed`, 'array', r.failed);
  r.failed.forEach((f: unknown, i) => {
    const o = record(f, `${field}.failed[${i}]`);
    if (typeof o.ticker !== 'string' || typeof o.reason !== 'string') fail(`${field}.failed[${i}]`, '{ ticker, reason } strings', f);
  });
  if (typeof r.backend !== 'string') fail(`${field}.backend`, 'string', r.backend);
  record(r.model, `${field}.model`);
  for (const k of ['tokens', 'fetchMs', 'routeMs', 'forwardMs'] as const) {
    if (typeof r[k] !== 'number' || !Number.isFinite(r[k])) fail(`${field}.${k}`, 'finite number', r[k]);
  }
  if (!Array.isArray(r.contextMissing) || !r.contextMissing.every((t) => typeof t === 'string')) {
    fail(`${field}.contextMissing`, 'array of tickers', r.contextMissing);
  }
  try {
    validateDailyAggregate(r.daily, `${field}.daily`);
  } catch (err) {
    if (err instanceof ReportError) throw new PayloadError(`${field}.daily`, err.message);
    throw err;
  }
  return r as unknown as ShardOutput;
}
