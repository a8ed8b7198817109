import { describe, expect, it } from 'vitest';
import { sampleReportInput } from '../src/report/sample-input.js';
import { renderCost } from '../src/report/render-reports.js';
import { buildFigures } from '../src/report/figure-data.js';
import { dailyAggregate } from '../src/report/daily.js';
import { prepareSummaryJson, summaryJson } from '../src/report/summary-json.js';
import type { RunSummary } from '../src/report/types.js';

function sample(tickers: number, failed: { ticker: string; reason: string }[] = []): RunSummary {
  return sampleReportInput({ seed: 5, tickers, days: 30, failed }).summary;
}

describe('summary.json serialised in two steps (prepareSummaryJson)', () => {
  it('writes the same text as JSON.stringify of the final summary, timings and finish time set after the rows', () => {
    const s = sample(40, [{ ticker: 'BAD', reason: 'NO_DATA: "quoted", $& $1 $` $\' and a\nnew line, ünïcødé' }]);
    s.tickers[3]!.reasons = [{ feature: 'vol_"x"_$&', value: -1.5, effect: 0.25 }];
    const finish = prepareSummaryJson(s);
    s.finishedAt = '2026-12-05T10:00:00.000Z';
    s.timings = { fetchMs: 1234, routeMs: 56, reportMs: 789, totalMs: 2080 };
    const text = finish(s);
    expect(text).toBe(`${JSON.stringify(s, null, 2)}\n`);
    expect(text).toBe(summaryJson(s));
    expect(JSON.parse(text)).toEqual(s);
  });

  it('handles a run with nothing routed, a run without failures and a summary without context', () => {
    const none = sample(0, [{ ticker: 'A', reason: 'x' }]);
    expect(prepareSummaryJson(none)(none)).toBe(summaryJson(none));
    const clean = sample(3);
    delete clean.context;
    expect(prepareSummaryJson(clean)(clean)).toBe(summaryJson(clean));
  });

  it('keeps the key order of the summary when failures come before the rows', () => {
    const s = sample(5, [{ ticker: 'Z', reason: 'r' }]);
    const { tickers, failed, ...rest } = s;
    const reordered = { failed, ...rest, tickers } as RunSummary;
    expect(prepareSummaryJson(reordered)(reordered)).toBe(summaryJson(reordered));
  });
});

describe('render order (renderCost)', () => {
  const kinds = (tickers: number) => {
    const input = sampleReportInput({ seed: 2, tickers, days: 20, classes: ['Equities', 'Fixed Income', 'Commodities', 'Derivatives'] });
    const figures = buildFigures({ ...input, series: [], daily: dailyAggregate(input.series) });
    return figures.map((f) => ({ kind: f.kind, cost: renderCost(f) })).sort((a, b) => b.cost - a.cost).map((f) => f.kind);
  };

  it('starts the performance figure first for a small run and the conditions figure first for a large one', () => {
    expect(kinds(1_000)).toEqual(['performance', 'timeSeries', 'conditions', 'routing']);
    expect(kinds(10_000)[0]).toBe('conditions');
    expect(kinds(10_000).at(-1)).toBe('routing');
  });
});
