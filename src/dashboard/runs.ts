import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { RedisClient } from '../../jobs/connection.js';
import { isRunId, runsIndexKey } from '../../jobs/keys.js';
import { REPORT_FILES, type RunSummary } from '../report/types.js';
import { readRunMeta, type RunMeta, type RunStatus } from '../../jobs/run-meta.js';

/** What the runs page shows of a run: its metadata hash, plus what its summary.json says once it is written. */
export interface RunView {
  runId: string;
  status: RunStatus;
  /** True while the run can still change (queued, routing, reporting). */
  active: boolean;
  source: string;
  /** The run's first tickers (`TICKERS_HEAD`: the pages show a few and the count, never the whole list). */
  tickers: string[];
  tickerCount: number;
  /** Fetch jobs done (stored or failed for good) out of `tickerCount`. */
  fetchedDone: number;
  /** 0..1: fetch progress, then 1 once routed. */
  progress: number;
  /** Shards of the run (one route job each) and those whose route job has stored its output. */
  shards: number;
  shardsRouted: number;
  routed: number | undefined;
  /** Failed tickers: from the report when written, else fetch failures so far. */
  failures: number;
  failedTickers: { ticker: string; reason: string }[];
  createdAt: string;
  finishedAt: string | undefined;
  /** Finished runs: creation to finish; active runs: creation to now. */
  durationMs: number;
  backend: string | undefined;
  error: string | undefined;
  /** True when the report folder holds the four PNGs and summaries. */
  hasReport: boolean;
  drift: { psi: number; level: string; changed: number; previousRunId: string } | undefined;
  meanConfidence: number | undefined;
  /** Routed tickers below UNCERTAIN_CONFIDENCE (summary.json `uncertain`); empty until the summary is written. */
  uncertainTickers: { ticker: string; confidence: number }[];
  /** Routed tickers with fewer routed days than requested (summary.json `short`); empty until the summary is written. */
  shortTickers: { ticker: string; days: number; requestedDays: number }[];
}

const TERMINAL: readonly RunStatus[] = ['finished', 'failed'];

/** Parsed summaries by run id, keyed on the file's mtime: a 1,000-ticker summary.json is ~0.6 MB to parse. */
const summaryCache = new Map<string, { mtimeMs: number; summary: SummaryDigest }>();
const SUMMARY_CACHE_MAX = 200;

type SummaryDigest = Pick<RunSummary, 'failed' | 'backend'> & {
  drift: RunView['drift'];
  meanConfidence: number | undefined;
  uncertain: RunView['uncertainTickers'];
  short: RunView['shortTickers'];
};

function digestOf(v: unknown): SummaryDigest | undefined {
  if (v === null || typeof v !== 'object') return undefined;
  const s = v as Partial<RunSummary>;
  const failed = Array.isArray(s.failed)
    ? s.failed.filter((f): f is { ticker: string; reason: string } => typeof f?.ticker === 'string' && typeof f?.reason === 'string')
    : [];
  // Summaries written before drift existed have neither block; the page shows what there is.
  const d = s.drift;
  const tickers = Array.isArray(s.tickers) ? s.tickers.filter((t) => typeof t?.ticker === 'string') : [];
  return {
    failed,
    backend: typeof s.backend === 'string' ? s.backend : 'unknown',
    drift:
      d && typeof d.psi === 'number' && typeof d.previousRunId === 'string'
        ? { psi: d.psi, level: String(d.level), changed: Array.isArray(d.changed) ? d.changed.length : 0, previousRunId: d.previousRunId }
        : undefined,
    meanConfidence: typeof s.routing?.meanConfidence === 'number' ? s.routing.meanConfidence : undefined,
    uncertain: tickers
      .filter((t) => t.uncertain === true && typeof t.confidence === 'number')
      .map((t) => ({ ticker: t.ticker, confidence: t.confidence })),
    short: tickers
      .filter((t) => t.short === true && typeof t.days === 'number' && typeof t.requestedDays === 'number')
      .map((t) => ({ ticker: t.ticker, days: t.days, requestedDays: t.requestedDays! })),
  };
}

/** Folder of a run's report under this dashboard's REPORTS_DIR (never a path read from Redis). */
export function reportFolder(reportsDir: string, runId: string): string {
  if (!isRunId(runId)) throw new RangeError(`Expected run id (lower-case UUID) for runId but received ${JSON.stringify(runId)}`);
  return path.join(reportsDir, runId);
}

async function readDigest(reportsDir: string, runId: string): Promise<SummaryDigest | undefined> {
  const file = path.join(reportFolder(reportsDir, runId), REPORT_FILES.summaryJson);
  let mtimeMs: number;
  try {
    mtimeMs = (await stat(file)).mtimeMs;
  } catch {
    return undefined; // not written yet, or written on another host's disk
  }
  const hit = summaryCache.get(runId);
  if (hit && hit.mtimeMs === mtimeMs) return hit.summary;
  let digest: SummaryDigest | undefined;
  try {
    digest = digestOf(JSON.parse(await readFile(file, 'utf8')));
  } catch {
    // Half-written (the report worker writes it last) or not ours: show the run from its hash alone.
    return undefined;
  }
  if (digest === undefined) return undefined;
  if (summaryCache.size >= SUMMARY_CACHE_MAX) summaryCache.delete(summaryCache.keys().next().value!);
  summaryCache.set(runId, { mtimeMs, summary: digest });
  return digest;
}

async function hasAllFiles(dir: string): Promise<boolean> {
  const names = Object.values(REPORT_FILES);
  const found = await Promise.all(names.map((f) => stat(path.join(dir, f)).then(() => true, () => false)));
  return found.every(Boolean);
}

export async function runView(meta: RunMeta, reportsDir: string, now = Date.now()): Promise<RunView> {
  const active = !TERMINAL.includes(meta.status);
  const digest = active ? undefined : await readDigest(reportsDir, meta.runId);
  const n = meta.tickerCount;
  const fetchedDone = meta.fetched + meta.fetchFailed;
  const created = Date.parse(meta.createdAt);
  const end = meta.finishedAt ? Date.parse(meta.finishedAt) : now;
  const routedDone = meta.routed !== undefined || meta.status === 'reporting' || !active;
  return {
    runId: meta.runId,
    status: meta.status,
    active,
    source: meta.source,
    tickers: meta.tickers,
    tickerCount: meta.tickerCount,
    fetchedDone,
    progress: routedDone ? 1 : n > 0 ? Math.min(1, fetchedDone / n) : 0,
    shards: meta.shards,
    shardsRouted: meta.shardsRouted,
    routed: meta.routed,
    failures: digest ? digest.failed.length : (meta.failedTickers ?? meta.fetchFailed),
    failedTickers: digest?.failed ?? [],
    createdAt: meta.createdAt,
    finishedAt: meta.finishedAt,
    durationMs: Number.isFinite(created) && Number.isFinite(end) ? Math.max(0, end - created) : 0,
    backend: meta.backend ?? digest?.backend,
    error: meta.error,
    hasReport: !active && (await hasAllFiles(reportFolder(reportsDir, meta.runId))),
    drift: digest?.drift,
    meanConfidence: digest?.meanConfidence,
    uncertainTickers: digest?.uncertain ?? [],
    shortTickers: digest?.short ?? [],
  };
}

/** The newest `limit` runs of the prefix, newest first; runs whose hash expired are left out. */
export async function listRuns(redis: RedisClient, prefix: string, reportsDir: string, limit = 50): Promise<RunView[]> {
  const ids = await redis.zrevrange(runsIndexKey(prefix), 0, limit - 1);
  const metas = await Promise.all(ids.filter(isRunId).map((id) => readRunMeta(redis, prefix, id, { tickerList: false })));
  const now = Date.now();
  return Promise.all(metas.filter((m): m is RunMeta => m !== undefined).map((m) => runView(m, reportsDir, now)));
}
