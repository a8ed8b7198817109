import { DOMAINS, NUM_DOMAINS, isDomain } from '../domains.js';
import { expectedMessage } from '../util/describe.js';
import { ReportError } from './errors.js';
import { validateDailyAggregate } from './daily.js';
import type { ReportInput, TickerSeries, TickerSummary } from './types.js';

function fail(what: string, name: string, value: unknown): never {
  throw new ReportError('BAD_REPORT_INPUT', expectedMessage(what, name, value));
}

function checkTicker(t: TickerSummary, i: number): void {
  const name = `summary.tickers[${i}]`;
  if (typeof t?.ticker !== 'string' || t.ticker.length === 0) fail('non-empty string', `${name}.ticker`, t?.ticker);
  if (!isDomain(t.domain)) fail('a domain name', `${name}.domain`, t.domain);
  if (t.class !== undefined && !isDomain(t.class)) fail('a domain name or undefined', `${name}.class`, t.class);
  if (!Array.isArray(t.probs) || t.probs.length !== NUM_DOMAINS) fail(`array of ${NUM_DOMAINS} numbers`, `${name}.probs`, t.probs);
  if (!Array.isArray(t.domainDays) || t.domainDays.length !== NUM_DOMAINS) {
    fail(`array of ${NUM_DOMAINS} numbers`, `${name}.domainDays`, t.domainDays);
  }
  for (const key of ['confidence', 'days', 'totalReturn', 'meanVol'] as const) {
    if (typeof t[key] !== 'number' || !Number.isFinite(t[key])) fail('finite number', `${name}.${key}`, t[key]);
  }
}

function checkSeries(s: TickerSeries, i: number): void {
  const name = `series[${i}]`;
  if (!(s?.dates instanceof Int32Array)) fail('Int32Array', `${name}.dates`, s?.dates);
  const n = s.dates.length;
  const fields = [
    ['vol', Float32Array],
    ['ret', Float32Array],
    ['confidence', Float32Array],
    ['assign', Uint8Array],
  ] as const;
  for (const [key, type] of fields) {
    const v = s[key];
    if (!(v instanceof type) || v.length !== n) fail(`${type.name} of length ${n}`, `${name}.${key}`, v);
  }
  if (s.class !== undefined && !isDomain(s.class)) fail('a domain name or undefined', `${name}.class`, s.class);
}

function checkShares(v: unknown, name: string): void {
  if (v === null || typeof v !== 'object') fail('object with a number per domain', name, v);
  for (const d of DOMAINS) {
    const x = (v as Record<string, unknown>)[d];
    if (typeof x !== 'number' || !Number.isFinite(x)) fail('finite number', `${name}["${d}"]`, x);
  }
}

function checkRouting(summary: ReportInput['summary']): void {
  const { routing, drift } = summary;
  if (routing === null || typeof routing !== 'object') fail('RoutingMix object', 'summary.routing', routing);
  checkShares(routing.counts, 'summary.routing.counts');
  checkShares(routing.share, 'summary.routing.share');
  if (typeof routing.meanConfidence !== 'number' || !Number.isFinite(routing.meanConfidence)) {
    fail('finite number', 'summary.routing.meanConfidence', routing.meanConfidence);
  }
  if (drift === null) return;
  if (typeof drift !== 'object') fail('DriftReport object or null', 'summary.drift', drift);
  if (typeof drift.psi !== 'number' || !Number.isFinite(drift.psi) || drift.psi < 0) fail('finite number ≥ 0', 'summary.drift.psi', drift.psi);
  checkShares(drift.previousShare, 'summary.drift.previousShare');
  if (!Array.isArray(drift.changed)) fail('array', 'summary.drift.changed', drift.changed);
}

/** Checks the parts of a report input the charts depend on, so a bad run fails with a message, not a blank chart. */
export function validateReportInput(input: ReportInput, outDir: string): void {
  if (typeof outDir !== 'string' || outDir.length === 0) fail('non-empty directory path', 'outDir', outDir);
  if (input === null || typeof input !== 'object') fail('ReportInput object', 'input', input);
  const { summary, series } = input;
  if (summary === null || typeof summary !== 'object') fail('RunSummary object', 'input.summary', summary);
  if (!Array.isArray(summary.tickers)) fail('array', 'summary.tickers', summary.tickers);
  if (!Array.isArray(summary.failed)) fail('array', 'summary.failed', summary.failed);
  if (!Array.isArray(series)) fail('array', 'input.series', series);
  summary.tickers.forEach(checkTicker);
  checkRouting(summary);
  series.forEach(checkSeries);
  if (input.daily !== undefined) validateDailyAggregate(input.daily, 'input.daily');
}
