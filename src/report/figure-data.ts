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
  const dateSet = new Set<number>();
  for (const s of input.series) for (const d of s.dates) dateSet.add(d);
  const dates = [...dateSet].sort((a, b) => a - b);
  const col = new Map(dates.map((d, i) => [d, i]));
  const names = classOrder(input.series);
  const volSum = names.map(() => new Float64Array(dates.length));
  const volN = names.map(() => new Uint32Array(dates.length));
  const confSum = new Float64Array(dates.length);
  const n = new Uint32Array(dates.length);
  const assigned = Array.from({ length: NUM_DOMAINS }, () => new Uint32Array(dates.length));
  for (const s of input.series) {
    const c = names.indexOf(classOf(s));
    for (let i = 0; i < s.dates.length; i++) {
      const j = col.get(s.dates[i] ?? 0);
      if (j === undefined) continue;
      const v = s.vol[i];
      if (v !== undefined && Number.isFinite(v)) {
        bump(volSum[c], j, v);
        bump(volN[c], j, 1);
      }
      const conf = s.confidence[i];
      if (conf !== undefined && Number.isFinite(conf)) {
        bump(confSum, j, conf);
        bump(n, j, 1);
      }
      const a = s.assign[i];
      if (a !== undefined) bump(assigned[a], j, 1);
    }
  }
  const scale = annualisedVol(1) * 100;
  return {
    kind: 'timeSeries',
    file: REPORT_FILES.timeSeries,
    title: 'Volatility regimes, router confidence and routing drift',
    subtitle: subtitle(input.summary),
    domains: domains(),
    dates,
    classes: names.map((name, c) => ({
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

export function performanceFigure(summary: RunSummary): PerformanceFigure {
  const tickers = summary.tickers
    .map((t) => ({
      ticker: t.ticker,
      cls: classOf(t),
      domain: Math.max(0, domainIndex(t.domain)),
      ret: t.totalReturn * 100,
      probs: [...t.probs],
    }))
    .sort((a, b) => a.domain - b.domain || b.ret - a.ret || a.ticker.localeCompare(b.ticker));
  return {
    kind: 'performance',
    file: REPORT_FILES.performance,
    title: 'Per-ticker return and preferred expert',
    subtitle: subtitle(summary),
    domains: domains(),
    tickers,
  };
}

function bump(arr: Float64Array | Uint32Array | undefined, i: number, by: number): void {
  if (arr && i < arr.length) arr[i] = (arr[i] ?? 0) + by;
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
