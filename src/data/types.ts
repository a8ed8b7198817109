import type { Domain } from '../domains.js';

/** Widths of the token `x` that the feature function makes and the router takes (H; the router's F = 2H). */
export const SUPPORTED_HIDDEN = [16, 32] as const;
export type Hidden = (typeof SUPPORTED_HIDDEN)[number];

export function isSupportedHidden(h: unknown): h is Hidden {
  return h === 16 || h === 32;
}

/** One daily bar. Prices are raw; `adjClose` carries splits and dividends. */
export interface Bar {
  /** ISO date `YYYY-MM-DD` (UTC trading day). */
  date: string;
  open: number;
  high: number;
  low: number;
  close: number;
  adjClose: number;
  /** Shares traded; null when the source has none. */
  volume: number | null;
}

/** What cleaning did to a series, counted so reports and tests can see it. */
export interface DataQuality {
  /** Rows the source read before cleaning (malformed ones included); absent when the source did not count them. */
  rows?: number;
  /** Rows dropped because a required price was null, NaN or not positive. */
  nulls: number;
  /** Rows dropped because their date repeated an earlier row. */
  duplicates: number;
  /** Missing business days between first and last bar (holidays count too; informative only). */
  gaps: number;
  /** Rows re-ordered because the input was not sorted by date. */
  reordered: number;
  /** Rows dropped because they could not be parsed (bad date, wrong column count); absent means 0. */
  malformed?: number;
  /** Unapplied splits found (a jump of exactly k:1 at the open and close) and undone; absent means 0. */
  splits?: number;
}

/** Which days to fetch. */
export interface FetchRange {
  /** Number of routed days wanted (the source adds the feature warm-up before them). */
  days: number;
  /** Last day, `YYYY-MM-DD`; default: the latest available. */
  end?: string;
}

export type { SourceName } from '../limits.js';

export interface SourceResult {
  ticker: string;
  bars: Bar[];
  quality: DataQuality;
  /** Asset class when the source knows it (simulator, labels file, built-in universe). */
  class?: Domain;
  /** Finer sub-type, e.g. `treasury-long`, `leveraged-3x`, `volatility-etn`, `fx-trust`. */
  subtype?: string;
}

/**
 * Features of one ticker: one token per routed day. Causal (day t uses bars ≤ t), scale-invariant, normalised with
 * fixed constants. This is what fetch jobs store in Redis (binary) and what the router consumes.
 */
export interface FeatureSeries {
  ticker: string;
  hidden: Hidden;
  /** Day of each token as days since 1970-01-01 UTC. */
  dates: Int32Array;
  /** Embeddings, row-major `[days, hidden]`. */
  x: Float32Array;
  /** Daily realised volatility (fraction, e.g. 0.012 = 1.2 %/day). */
  vol: Float32Array;
  /** Risk scalar (see docs/features.md). */
  risk: Float32Array;
  /** Daily log return of the adjusted close. */
  ret: Float32Array;
}
