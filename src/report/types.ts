import type { Domain } from '../domains.js';
import type { SourceName } from '../data/types.js';

/** Per-ticker result of a run (one entry of `summary.json` `tickers`). */
export interface TickerSummary {
  ticker: string;
  /** Known asset class (label), when the source knows it. */
  class?: Domain;
  subtype?: string;
  /** Domain chosen by majority over days (ties: lowest index). */
  domain: Domain;
  /** Mean probability per domain over days, in DOMAINS order. */
  probs: [number, number, number, number];
  /** Mean probability of the chosen domain over days. */
  confidence: number;
  /** Number of routed days. */
  days: number;
  /** Days assigned to each domain, in DOMAINS order. */
  domainDays: [number, number, number, number];
  /** Total log return over the routed days. */
  totalReturn: number;
  /** Mean daily realised volatility over the routed days. */
  meanVol: number;
  firstDate: string;
  lastDate: string;
  /** Present (true) when `confidence` is below `UNCERTAIN_CONFIDENCE` (src/limits.ts). */
  uncertain?: true;
  /** Routed days the run asked for; absent when the fetch stage did not report it. */
  requestedDays?: number;
  /** Present (true) when fewer days were routed than requested. */
  short?: true;
  /** What cleaning did to the ticker's bars; absent when the fetch stage did not report it. */
  quality?: TickerQuality;
  /**
   * The (up to) three features that pushed the ticker most towards its domain: occlusion of each feature of its mean
   * token against the neutral value 0, effect in ln p(domain) (src/router/attribution.ts).
   */
  reasons?: { feature: string; value: number; effect: number }[];
}

/** A ticker's data quality as `summary.json` carries it: what the source read and what cleaning dropped. */
export interface TickerQuality {
  /** Rows the source read, before cleaning; absent when the source did not count them (simulator). */
  rows?: number;
  /** Rows cleaning dropped, by reason (see `DataQuality` in src/data/types.ts). */
  dropped: {
    /** Unparsable rows: bad date, wrong column count. */
    malformed: number;
    /** A required price null, NaN, infinite, non-numeric, zero or negative. */
    badPrice: number;
    /** A date repeating an earlier row. */
    duplicates: number;
  };
  /** Missing business days between the first and last bar read (holidays count too). */
  gaps: number;
  /** Missing business days between the first and last routed day (holidays count too). */
  routedGaps: number;
}

export interface FailedTicker {
  ticker: string;
  reason: string;
}

/** A number per domain, keyed by domain name (readable in `summary.json`). */
export type DomainShares = Record<Domain, number>;

/** How a run's routed tickers spread over the domains. */
export interface RoutingMix {
  /** Routed tickers. */
  routed: number;
  /** Routed tickers per chosen domain. */
  counts: DomainShares;
  /** `counts / routed` (all 0 when nothing was routed). */
  share: DomainShares;
  /** Mean over routed tickers of their confidence (0 when nothing was routed). */
  meanConfidence: number;
}

/** Change of a run's routing against the previous run of the same universe. */
export interface DriftReport {
  /** Universe id: source and ticker set, hashed (see `universeId`). */
  universe: string;
  previousRunId: string;
  previousCreatedAt: string;
  /** Population stability index of the domain shares (previous run = expected). */
  psi: number;
  /** `stable` below 0.1, `moderate` below 0.25, `significant` from 0.25. */
  level: 'stable' | 'moderate' | 'significant';
  previousShare: DomainShares;
  previousMeanConfidence: number;
  /** This run's mean confidence minus the previous run's. */
  meanConfidenceChange: number;
  /** Tickers routed in both runs. */
  compared: number;
  /** Tickers routed in both runs whose chosen domain changed, in this run's order. */
  changed: { ticker: string; from: Domain; to: Domain }[];
}

/** Contents of `summary.json`. */
export interface RunSummary {
  runId: string;
  source: SourceName;
  createdAt: string;
  finishedAt: string;
  tickers: TickerSummary[];
  failed: FailedTicker[];
  /** Router backend that ran, e.g. `simd-avx512`, `simd-avx2`, `scalar`, `cuda`. */
  backend: string;
  model: { path: string; hidden: number; featureSpec: string; members?: number };
  /**
   * Milliseconds per stage: `fetchMs` from the enqueue to the start of the last shard's route job, `routeMs` the
   * shards' route jobs summed (they overlap the fetching of other shards), `reportMs` the report job, `totalMs` the
   * enqueue to the written report.
   */
  timings: { fetchMs: number; routeMs: number; reportMs: number; totalMs: number };
  /** Total tokens (ticker-days) routed. */
  tokens: number;
  /** Universe id (source and ticker set), the key runs are compared by. */
  universe: string;
  /** Distribution of chosen domains over routed tickers and their mean confidence. */
  routing: RoutingMix;
  /** Drift against the previous run of the same universe; null for its first run (or none recorded). */
  drift: DriftReport | null;
  /** The market-context set the features compare every ticker with, and the members a run lacked. */
  context?: { set: string[]; missing: string[] };
}

/** Per-day series of one ticker, for the time-series report. */
export interface TickerSeries {
  ticker: string;
  class?: Domain;
  /** Days since 1970-01-01 UTC. */
  dates: Int32Array;
  vol: Float32Array;
  ret: Float32Array;
  /** Probability of the assigned domain per day. */
  confidence: Float32Array;
  /** Assigned domain index per day. */
  assign: Uint8Array;
}

/**
 * The per-day sums the time-series figure is drawn from (src/report/daily.ts builds, merges and checks them): 16
 * numbers per distinct date of the run, however many tickers it has.
 */
export interface DailyAggregate {
  /** Days since 1970-01-01 UTC, ascending, distinct: the union of every ticker's routed dates. */
  dates: number[];
  /** Ticker series per class, in `DAILY_CLASSES` order (daily.ts); the figure draws the classes with at least one. */
  classSeries: number[];
  /** Sum of the finite daily volatilities per class per date: `[class][date]`. */
  volSum: number[][];
  /** Number of finite daily volatilities per class per date. */
  volN: number[][];
  /** Sum and number of finite confidences (probability of the assigned domain) per date. */
  confSum: number[];
  confN: number[];
  /** Ticker-days assigned to each domain per date: `[domain][date]`. */
  assigned: number[][];
}

export interface ReportInput {
  summary: RunSummary;
  /** Per-day series of each routed ticker; the time-series figure sums them unless `daily` is given. */
  series: TickerSeries[];
  /** The run's per-day sums, already reduced (a sharded run's report merges its shards'); `series` is then unused. */
  daily?: DailyAggregate;
}

/** File names written into `REPORTS_DIR/<runId>/`. */
export const REPORT_FILES = {
  routing: 'finance_moe_expert_routing.png',
  conditions: 'finance_moe_market_conditions.png',
  timeSeries: 'finance_moe_time_series.png',
  performance: 'finance_moe_performance.png',
  summaryJson: 'summary.json',
  summaryMd: 'summary.md',
} as const;
