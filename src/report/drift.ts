import { createHash } from 'node:crypto';
import { DOMAINS, NUM_DOMAINS, domainIndex, type Domain } from '../domains.js';
import { ReportError } from './errors.js';
import type { DomainShares, DriftReport, RoutingMix, TickerSummary } from './types.js';

/**
 * Routing mix of a run and its drift against the previous run of the same universe. Pure functions: the report
 * worker fetches the previous run from Redis (`workers/universe-history.ts`) and hands it in.
 */

/**
 * Population stability index bands (Siddiqi, "Credit Risk Scorecards", 2006; the usual reading in model
 * monitoring): below 0.1 the mix is stable, 0.1 to 0.25 it moved, 0.25 and above it changed materially.
 */
export const PSI_BANDS = { moderate: 0.1, significant: 0.25 } as const;

/**
 * Share given to an empty domain before taking logarithms: PSI is infinite when one run has no ticker in a domain
 * the other run uses. 1e-4 is a common floor; with it one domain going from 0 to 25 % of tickers adds ~1.95, which
 * still reads as "significant" without swamping the other terms.
 */
export const PSI_FLOOR = 1e-4;

export type DriftLevel = DriftReport['level'];

/** A compact record of one finished run: what a later run of the same universe compares itself with. */
export interface UniverseRunRecord {
  runId: string;
  createdAt: string;
  finishedAt: string;
  /** Routed tickers and their chosen domains, as parallel arrays (a 1,000-ticker run stores ~9 kB). */
  tickers: string[];
  /** Chosen domain index per ticker, one digit per ticker. */
  domains: string;
  meanConfidence: number;
}

function sharesOf(values: readonly number[]): DomainShares {
  const out = {} as DomainShares;
  DOMAINS.forEach((d, i) => (out[d] = values[i] ?? 0));
  return out;
}

/** Values of a per-domain record in DOMAINS order. */
export function sharesArray(s: DomainShares): number[] {
  return DOMAINS.map((d) => s[d]);
}

/** Identifier of a universe: the source and the requested tickers as a set (order and duplicates do not matter). */
export function universeId(source: string, tickers: readonly string[]): string {
  const canonical = `${source}\n${[...new Set(tickers)].sort().join(',')}`;
  return createHash('sha256').update(canonical).digest('hex').slice(0, 16);
}

/** Tickers per chosen domain, their shares, and the mean confidence over routed tickers (0 when none routed). */
export function routingMix(tickers: readonly TickerSummary[]): RoutingMix {
  const counts = new Array<number>(NUM_DOMAINS).fill(0);
  let conf = 0;
  for (const t of tickers) {
    const d = domainIndex(t.domain);
    if (d >= 0) counts[d]! += 1;
    conf += t.confidence;
  }
  const n = tickers.length;
  return {
    routed: n,
    counts: sharesOf(counts),
    share: sharesOf(counts.map((c) => (n > 0 ? c / n : 0))),
    meanConfidence: n > 0 ? conf / n : 0,
  };
}

/**
 * Population stability index of `actual` against `expected` (both shares summing to 1):
 * Σ (a − e) · ln(a / e), with shares floored at `PSI_FLOOR`. Symmetric in its arguments, 0 for identical mixes.
 */
export function populationStabilityIndex(expected: readonly number[], actual: readonly number[]): number {
  if (expected.length !== actual.length || expected.length === 0) {
    throw new ReportError(
      'BAD_REPORT_INPUT',
      `Expected two share arrays of the same non-zero length for populationStabilityIndex but received lengths ${expected.length} and ${actual.length}`,
    );
  }
  let psi = 0;
  for (let i = 0; i < expected.length; i++) {
    const e = Math.max(PSI_FLOOR, expected[i]!);
    const a = Math.max(PSI_FLOOR, actual[i]!);
    if (!Number.isFinite(e) || !Number.isFinite(a)) {
      throw new ReportError('BAD_REPORT_INPUT', `Expected finite shares for populationStabilityIndex but received ${expected[i]} and ${actual[i]} at ${i}`);
    }
    psi += (a - e) * Math.log(a / e);
  }
  return psi;
}

export function driftLevel(psi: number): DriftLevel {
  if (psi >= PSI_BANDS.significant) return 'significant';
  if (psi >= PSI_BANDS.moderate) return 'moderate';
  return 'stable';
}

/** The record a finished run leaves for the next run of its universe. */
export function runRecord(runId: string, createdAt: string, finishedAt: string, tickers: readonly TickerSummary[]): UniverseRunRecord {
  return {
    runId,
    createdAt,
    finishedAt,
    tickers: tickers.map((t) => t.ticker),
    domains: tickers.map((t) => String(Math.max(0, domainIndex(t.domain)))).join(''),
    meanConfidence: routingMix(tickers).meanConfidence,
  };
}

/** Checks a record read back from storage (any version of the project may have written it). */
export function isUniverseRunRecord(v: unknown): v is UniverseRunRecord {
  if (v === null || typeof v !== 'object') return false;
  const r = v as Record<string, unknown>;
  return (
    typeof r.runId === 'string' &&
    typeof r.createdAt === 'string' &&
    typeof r.finishedAt === 'string' &&
    Array.isArray(r.tickers) &&
    r.tickers.every((t) => typeof t === 'string') &&
    typeof r.domains === 'string' &&
    r.domains.length === r.tickers.length &&
    /^[0-3]*$/.test(r.domains) &&
    typeof r.meanConfidence === 'number' &&
    Number.isFinite(r.meanConfidence)
  );
}

/**
 * Drift of this run's routing against `previous`: PSI over the domain shares of each run's routed tickers, the
 * change in mean confidence, and every ticker routed in both runs whose domain changed (in this run's order).
 */
export function compareRuns(universe: string, current: readonly TickerSummary[], previous: UniverseRunRecord): DriftReport {
  const prevCounts = new Array<number>(NUM_DOMAINS).fill(0);
  const prevDomain = new Map<string, Domain>();
  previous.tickers.forEach((t, i) => {
    const d = Number(previous.domains[i]);
    prevCounts[d]! += 1;
    prevDomain.set(t, DOMAINS[d]!);
  });
  const nPrev = previous.tickers.length;
  const prevShare = prevCounts.map((c) => (nPrev > 0 ? c / nPrev : 0));
  const mix = routingMix(current);
  const psi = populationStabilityIndex(prevShare, sharesArray(mix.share));
  const changed: DriftReport['changed'] = [];
  let compared = 0;
  for (const t of current) {
    const from = prevDomain.get(t.ticker);
    if (from === undefined) continue;
    compared++;
    if (from !== t.domain) changed.push({ ticker: t.ticker, from, to: t.domain });
  }
  return {
    universe,
    previousRunId: previous.runId,
    previousCreatedAt: previous.createdAt,
    psi,
    level: driftLevel(psi),
    previousShare: sharesOf(prevShare),
    previousMeanConfidence: previous.meanConfidence,
    meanConfidenceChange: mix.meanConfidence - previous.meanConfidence,
    compared,
    changed,
  };
}
