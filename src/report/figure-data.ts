import { DOMAINS, NUM_DOMAINS, domainIndex } from '../domains.js';
import type {
  ConditionsFigure,
  Figure,
  PerformanceFigure,
  RoutingFigure,
  TimeSeriesFigure,
} from './figure-types.js';
import {
  CONDITION_THRESHOLDS,
  annualisedReturn,
  annualisedVol,
  classOf,
  classOrder,
  classStats,
} from './market-condition.js';
import { sharesArray } from './drift.js';
import type { DriftPanelData } from './figure-types.js';
import { REPORT_FILES, type ReportInput, type RunSummary } from './types.js';
import { DAILY_CLASSES, dailyAggregate } from './daily.js';

const domains = (): string[] => [...DOMAINS];

function subtitle(summary: RunSummary): string {
  const n = summary.tickers.length;
  const failed = summary.failed.length > 0 ? `, ${summary.failed.length} failed` : '';
  const day = summary.finishedAt.slice(0, 10);
  return `run ${summary.runId} · ${day} · ${n} ticker${n === 1 ? '' : 's'}${failed} · source ${summary.source} · backend ${summary.backend}`;
}

export function routingFigure(summary: RunSummary): RoutingFigure {
  const classes = classOrder(summary.tickers);
  const counts = classes.map(() => new Array<number>(NUM_DOMAINS).fill(0));
  for (const t of summary.tickers) {
    const row = counts[classes.indexOf(classOf(t))];
    const d = domainIndex(t.domain);
    if (row && d >= 0) row[d] = (row[d] ?? 0) + 1;
  }
  return {
    kind: 'routing',
    file: REPORT_FILES.routing,
    title: 'Expert routing by asset class',
    subtitle: subtitle(summary),
    classes,
    domains: domains(),
    counts,
  };
}

export function conditionsFigure(summary: RunSummary): ConditionsFigure {
  return {
    kind: 'conditions',
    file: REPORT_FILES.conditions,
    title: 'Market conditions: return against volatility',
    subtitle: subtitle(summary),
    domains: domains(),
    points: summary.tickers.map((t) => ({
      ticker: t.ticker,
      cls: classOf(t),
      domain: Math.max(0, domainIndex(t.domain)),
      vol: annualisedVol(t.meanVol) * 100,
      ret: annualisedReturn(t.totalReturn, t.days) * 100,
    })),
    classes: classStats(summary).map((s) => ({
      name: s.name,
      vol: s.annVol * 100,
      ret: s.annReturn * 100,
      condition: s.condition,
      tickers: s.tickers,
    })),
  };
}

export function timeSeriesFigure(input: ReportInput): TimeSeriesFigure {
  const daily = input.daily ?? dailyAggregate(input.series);
  const { dates, volSum, volN, confSum, confN: n, assigned } = daily;
  const classes = DAILY_CLASSES.map((name, c) => ({ name, c })).filter(({ c }) => (daily.classSeries[c] ?? 0) > 0);
  const scale = annualisedVol(1) * 100;
  return {
    kind: 'timeSeries',
    file: REPORT_FILES.timeSeries,
    title: 'Volatility regimes, router confidence and routing drift',
    subtitle: subtitle(input.summary),
    domains: domains(),
    dates: [...dates],
    classes: classes.map(({ name, c }) => ({
      name,
      vol: dates.map((_, j) => (volN[c]![j]! > 0 ? (volSum[c]![j]! / volN[c]![j]!) * scale : null)),
    })),
    confidence: dates.map((_, j) => (n[j]! > 0 ? confSum[j]! / n[j]! : null)),
    domainShare: assigned.map((row) =>
      dates.map((_, j) => {
        let total = 0;
        for (const r of assigned) total += r[j]!;
        return total > 0 ? row[j]! / total : 0;
      }),
    ),
    bands: { low: CONDITION_THRESHOLDS.lowVol * 100, high: CONDITION_THRESHOLDS.highVol * 100 },
    drift: driftPanelData(input.summary),
  };
}

function driftPanelData(summary: RunSummary): DriftPanelData {
  const { routing, drift } = summary;
  return {
    share: sharesArray(routing.share),
    routed: routing.routed,
    meanConfidence: routing.meanConfidence,
    previous:
      drift === null
        ? null
        : {
            runId: drift.previousRunId,
            share: sharesArray(drift.previousShare),
            meanConfidence: drift.previousMeanConfidence,
            psi: drift.psi,
            level: drift.level,
            compared: drift.compared,
            changed: drift.changed.map((c) => ({ ...c })),
          },
  };
}

/**
 * Most tickers the performance panels draw one bar each for. The panels grow to 1,600 CSS px, about 13 px a bar at
 * 100 tickers with every tick label drawn (`test/report-labels.test.ts`); beyond that the bars thin below a pixel at a
 * few thousand tickers and the labels thin out to an arbitrary sample. A larger run shows its
 * `PERFORMANCE_TICKERS_MAX / 2` highest and as many lowest returns, and the panels say how many more there are.
 */
export const PERFORMANCE_TICKERS_MAX = 100;

/** The tickers a performance figure of `rows` draws: all of them, or the highest and lowest returns. */
function performanceRows<T extends { ticker: string; ret: number }>(rows: T[]): T[] {
  if (rows.length <= PERFORMANCE_TICKERS_MAX) return rows;
  const byReturn = [...rows].sort((a, b) => b.ret - a.ret || a.ticker.localeCompare(b.ticker));
  const half = PERFORMANCE_TICKERS_MAX / 2;
  return [...byReturn.slice(0, half), ...byReturn.slice(-half)];
}

export function performanceFigure(summary: RunSummary): PerformanceFigure {
  const all = summary.tickers.map((t) => ({
    ticker: t.ticker,
    cls: classOf(t),
    domain: Math.max(0, domainIndex(t.domain)),
    ret: t.totalReturn * 100,
    probs: [...t.probs],
  }));
  const tickers = performanceRows(all).sort((a, b) => a.domain - b.domain || b.ret - a.ret || a.ticker.localeCompare(b.ticker));
  return {
    kind: 'performance',
    file: REPORT_FILES.performance,
    title: 'Per-ticker return and preferred expert',
    subtitle: subtitle(summary),
    domains: domains(),
    tickers,
    total: all.length,
  };
}

/** The four figures of a run, in `REPORT_FILES` order. */
export function buildFigures(input: ReportInput): Figure[] {
  return [
    routingFigure(input.summary),
    conditionsFigure(input.summary),
    timeSeriesFigure(input),
    performanceFigure(input.summary),
  ];
}
