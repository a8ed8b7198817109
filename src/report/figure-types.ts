/**
 * Plain, structured-clone-safe descriptions of the four figures. The main thread reduces a run to these; a render
 * worker turns one into a PNG. No typed arrays or functions, so they cross `postMessage` unchanged.
 */

export interface FigureHeader {
  /** File name the PNG is written to. */
  file: string;
  title: string;
  subtitle: string;
}

export interface RoutingFigure extends FigureHeader {
  kind: 'routing';
  /** Row labels: asset classes present, `Unknown` last. */
  classes: string[];
  domains: string[];
  /** Tickers per [class][chosen domain]. */
  counts: number[][];
}

export interface ConditionPoint {
  ticker: string;
  cls: string;
  /** Index of the chosen domain. */
  domain: number;
  /** Annualised volatility and annualised log return, in percent. */
  vol: number;
  ret: number;
}

export interface ConditionsFigure extends FigureHeader {
  kind: 'conditions';
  domains: string[];
  points: ConditionPoint[];
  /** Per class: mean annualised volatility and return (percent) and the condition label. */
  classes: { name: string; vol: number; ret: number; condition: string; tickers: number }[];
}

export interface TimeSeriesFigure extends FigureHeader {
  kind: 'timeSeries';
  domains: string[];
  /** Days since 1970-01-01 UTC, ascending, the union of every ticker's dates. */
  dates: number[];
  /** Mean annualised volatility (percent) per class per date; null where no ticker of the class has that date. */
  classes: { name: string; vol: (number | null)[] }[];
  /** Mean confidence over tickers per date. */
  confidence: (number | null)[];
  /** Share of tickers assigned to each domain per date: `[domain][date]`. */
  domainShare: number[][];
  /** Regime bands in annualised volatility percent. */
  bands: { low: number; high: number };
  /** The run's domain mix and its drift against the previous run of the universe. */
  drift: DriftPanelData;
}

export interface DriftPanelData {
  /** Share of routed tickers per domain, in `domains` order. */
  share: number[];
  routed: number;
  meanConfidence: number;
  /** Null for the first recorded run of a universe. */
  previous: {
    runId: string;
    share: number[];
    meanConfidence: number;
    psi: number;
    level: string;
    compared: number;
    changed: { ticker: string; from: string; to: string }[];
  } | null;
}

export interface PerformanceTicker {
  ticker: string;
  cls: string;
  domain: number;
  /** Total log return over the routed days, percent. */
  ret: number;
  probs: number[];
}

export interface PerformanceFigure extends FigureHeader {
  kind: 'performance';
  domains: string[];
  /**
   * Sorted by chosen domain, then by return: every routed ticker, or for a run of more than
   * `PERFORMANCE_TICKERS_MAX` (figure-data.ts) only its highest and lowest returns.
   */
  tickers: PerformanceTicker[];
  /** Routed tickers of the run; more than `tickers.length` when the figure shows only the extremes. */
  total: number;
}

export type Figure = RoutingFigure | ConditionsFigure | TimeSeriesFigure | PerformanceFigure;
