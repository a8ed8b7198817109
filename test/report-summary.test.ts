import { describe, expect, it } from 'vitest';
import { CONDITION_THRESHOLDS, classStats, marketCondition } from '../src/report/market-condition.js';
import { sampleReportInput } from '../src/report/sample-input.js';
import { buildSummaryMarkdown } from '../src/report/summary-markdown.js';
import { routingMix } from '../src/report/drift.js';
import type { RunSummary, TickerSummary } from '../src/report/types.js';

function ticker(over: Partial<TickerSummary> & Pick<TickerSummary, 'ticker'>): TickerSummary {
  return {
    domain: 'Equities',
    probs: [0.7, 0.1, 0.1, 0.1],
    confidence: 0.7,
    days: 100,
    domainDays: [100, 0, 0, 0],
    totalReturn: 0,
    meanVol: 0.01,
    firstDate: '2026-06-01',
    lastDate: '2026-10-20',
    ...over,
  };
}

function summary(tickers: TickerSummary[]): RunSummary {
  return {
    runId: 'r1',
    source: 'csv',
    createdAt: '2026-11-20T21:00:00Z',
    finishedAt: '2026-11-20T21:00:03Z',
    tickers,
    failed: [],
    backend: 'simd-avx2',
    model: { path: 'models/router.safetensors', hidden: 16, featureSpec: 'v1' },
    timings: { fetchMs: 900, routeMs: 12.4, reportMs: 1500, totalMs: 2600 },
    tokens: tickers.reduce((a, t) => a + t.days, 0),
    universe: '0123456789abcdef',
    routing: routingMix(tickers),
    drift: null,
  };
}

describe('market condition', () => {
  const t = CONDITION_THRESHOLDS;
  it.each([
    [t.crisisVol, t.crisisReturn, 'crisis'],
    [t.crisisVol, t.crisisReturn + 0.01, 'high volatility'],
    [t.highVol, 0.5, 'high volatility'],
    [t.highVol - 0.01, t.bullReturn, 'bull'],
    [0.1, t.bearReturn, 'bear'],
    [0.1, t.bullReturn - 0.001, 'sideways'],
    [0.1, t.bearReturn + 0.001, 'sideways'],
  ])('vol %f, return %f → %s', (vol, ret, want) => {
    expect(marketCondition(vol, ret)).toBe(want);
  });

  it('annualises per ticker and weights confidence by days', () => {
    // 252 days of 2 %/day volatility and +50 % log return: 31.7 % a year, high volatility.
    const s = summary([
      ticker({ ticker: 'AAA', class: 'Equities', days: 252, domainDays: [252, 0, 0, 0], meanVol: 0.02, totalReturn: 0.5, confidence: 0.9 }),
      ticker({ ticker: 'BBB', class: 'Equities', days: 84, meanVol: 0.02, totalReturn: 0.5 / 3, confidence: 0.5, domain: 'Derivatives', domainDays: [0, 0, 0, 84] }),
    ]);
    const [eq] = classStats(s);
    expect(eq!.annVol).toBeCloseTo(0.02 * Math.sqrt(252), 10);
    expect(eq!.annReturn).toBeCloseTo(0.5, 10);
    expect(eq!.condition).toBe('high volatility');
    expect(eq!.primaryDomain).toBe('Equities');
    expect(eq!.primaryShare).toBeCloseTo(252 / 336, 10);
    expect(eq!.confidence).toBeCloseTo((0.9 * 252 + 0.5 * 84) / 336, 10);
  });
});

describe('buildSummaryMarkdown', () => {
  it('reports per class, tickers routed against their label, and the thresholds it used', () => {
    const md = buildSummaryMarkdown(
      summary([
        ticker({ ticker: 'SPY', class: 'Equities', totalReturn: 0.1 }),
        ticker({ ticker: 'TLT', class: 'Fixed Income', subtype: 'treasury-long', domain: 'Equities', totalReturn: -0.1, meanVol: 0.006 }),
        ticker({ ticker: 'ZZZ', domain: 'Commodities', domainDays: [0, 0, 100, 0] }),
      ]),
    );
    expect(md).toContain('| Equities | 1 | 15.9 % | +25.2 % | bull | Equities | 100.0 % | 0.700 |');
    expect(md).toContain('| Fixed Income | 1 | 9.5 % | -25.2 % | bear | Equities | 100.0 % | 0.700 |');
    expect(md).toContain('| Unknown | 1 |');
    expect(md).toContain('1 of 2 labelled tickers were routed to another domain');
    expect(md).toContain('| TLT | Fixed Income (treasury-long) | Equities | 0.700 |');
    expect(md).not.toContain('| SPY | Equities');
    expect(md).toContain('volatility ≥ 30 %');
    expect(md).toContain('Router backend: `simd-avx2`; model `models/router.safetensors` (H = 16, features v1)');
    const ens = summary([ticker({ ticker: 'SPY', class: 'Equities' })]);
    ens.model = { ...ens.model, members: 3 };
    expect(buildSummaryMarkdown(ens)).toContain('(H = 16, an ensemble of 3 routers, features v1)');
    expect(md).toContain('Fetch 900 ms, route 12 ms, report 1.50 s, total 2.60 s');
    expect(md).toContain('## Failed tickers\n\nNone.');
    // The note opens with one sentence per class, before the tables.
    expect(md.indexOf('## In brief')).toBeLessThan(md.indexOf('## Market condition'));
    expect(md).toContain(
      '- **Equities** (1 ticker): bull, 15.9 % annualised volatility and +25.2 % annualised return; routed to Equities on 100 % of days (its own domain), mean confidence 0.70.',
    );
    expect(md).toContain('- **Fixed Income** (1 ticker): bear, 9.5 % annualised volatility and -25.2 % annualised return; routed to Equities on 100 % of days (not Fixed Income)');
    expect(md).toContain('(no labelled domain)');
    expect(md).toContain('- 1 of 2 labelled tickers went to a domain other than their label.');
    expect(md).toContain('- No ticker failed.');
  });

  it('lists uncertain tickers apart with their top two domains, and the accuracy of the confident rest', () => {
    const md = buildSummaryMarkdown(
      summary([
        ticker({ ticker: 'SPY', class: 'Equities', confidence: 0.9 }),
        ticker({ ticker: 'TLT', class: 'Fixed Income', domain: 'Equities', confidence: 0.8 }),
        ticker({ ticker: 'UGL', class: 'Derivatives', domain: 'Commodities', probs: [0.05, 0.05, 0.48, 0.42], confidence: 0.48, uncertain: true }),
      ]),
    );
    const section = md.slice(md.indexOf('## Uncertain routes'), md.indexOf('## Short tickers'));
    expect(section).toContain('Confident: 2 of 3; 1 of the 2 labelled confident tickers (50.0 %) went to their own class.');
    expect(section).toContain('| UGL | Derivatives | Commodities | 0.480 | Commodities 0.48, Derivatives 0.42 |');
    expect(section).not.toContain('| SPY');
    expect(md).toContain('## Short tickers\n\nNone: every routed ticker got the days it asked for.');
  });

  it('lists short tickers with routed and requested days, rows dropped by reason and gaps', () => {
    const md = buildSummaryMarkdown(
      summary([
        ticker({ ticker: 'SPY', requestedDays: 100 }),
        ticker({
          ticker: 'NEWL',
          days: 45,
          requestedDays: 250,
          short: true,
          quality: { rows: 120, dropped: { malformed: 2, badPrice: 3, duplicates: 1 }, gaps: 12, routedGaps: 9 },
        }),
      ]),
    );
    const section = md.slice(md.indexOf('## Short tickers'), md.indexOf('## Failed tickers'));
    expect(section).toContain('1 ticker routed on fewer days than requested:');
    expect(section).toContain('| NEWL | 45 / 250 | 120 | 2 malformed, 3 bad price, 1 duplicate | 12 / 9 |');
    expect(section).not.toContain('| SPY');
    expect(md).toContain('No uncertain tickers.');
  });

  it('is deterministic for the seeded sample run', () => {
    const a = buildSummaryMarkdown(sampleReportInput({ seed: 11 }).summary);
    const b = buildSummaryMarkdown(sampleReportInput({ seed: 11 }).summary);
    expect(a).toBe(b);
    expect(a).not.toBe(buildSummaryMarkdown(sampleReportInput({ seed: 12 }).summary));
  });
});
