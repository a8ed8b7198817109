import { describe, expect, it } from 'vitest';
import { UNCERTAIN_CONFIDENCE } from '../src/limits.js';
import { AggregateError, dayToIso, summarizeTicker, tickerSeries, type RoutedTicker } from '../workers/aggregate.js';
import { dailyAggregate, mergeDaily, validateDailyAggregate } from '../src/report/daily.js';
import { timeSeriesFigure } from '../src/report/figure-data.js';
import { sampleReportInput } from '../src/report/sample-input.js';

const D0 = 19_723; // 2024-01-01

function routed(assign: number[], probs: number[][], extra: Partial<RoutedTicker> = {}): RoutedTicker {
  const n = assign.length;
  return {
    ticker: 'TEST',
    dates: Int32Array.from({ length: n }, (_, i) => D0 + i),
    vol: Float32Array.from({ length: n }, (_, i) => 0.01 * (i + 1)),
    ret: Float32Array.from({ length: n }, () => 0.01),
    probs: Float32Array.from(probs.flat()),
    assign: Uint8Array.from(assign),
    ...extra,
  };
}

describe('summarizeTicker', () => {
  it('takes the majority domain and the mean probability of that domain as confidence', () => {
    const t = routed(
      [1, 1, 2],
      [
        [0.1, 0.7, 0.1, 0.1],
        [0.2, 0.5, 0.2, 0.1],
        [0.1, 0.2, 0.6, 0.1],
      ],
      { class: 'Fixed Income', subtype: 'treasury-long' },
    );
    const s = summarizeTicker(t);
    expect(s.domain).toBe('Fixed Income');
    expect(s.domainDays).toEqual([0, 2, 1, 0]);
    expect(s.probs[0]).toBeCloseTo(0.4 / 3, 6);
    expect(s.probs[1]).toBeCloseTo(1.4 / 3, 6);
    expect(s.confidence).toBeCloseTo(1.4 / 3, 6);
    expect(s.days).toBe(3);
    expect(s.totalReturn).toBeCloseTo(0.03, 6);
    expect(s.meanVol).toBeCloseTo(0.02, 6);
    expect(s.firstDate).toBe('2024-01-01');
    expect(s.lastDate).toBe('2024-01-03');
    expect(s.class).toBe('Fixed Income');
    expect(s.subtype).toBe('treasury-long');
  });

  it('flags a ticker whose confidence is below UNCERTAIN_CONFIDENCE as uncertain, and only that one', () => {
    const p = UNCERTAIN_CONFIDENCE - 0.05;
    const rest = (1 - p) / 3;
    const low = summarizeTicker(routed([2, 2], [[rest, rest, p, rest], [rest, rest, p, rest]]));
    expect(low.confidence).toBeCloseTo(p, 6);
    expect(low.uncertain).toBe(true);
    const sure = summarizeTicker(routed([2, 2], [[0.02, 0.02, 0.94, 0.02], [0.02, 0.02, 0.94, 0.02]]));
    expect(sure.uncertain).toBeUndefined();
    expect('uncertain' in sure).toBe(false);
  });

  it('carries the fetch stage quality, the requested days and a short flag when fewer days were routed', () => {
    const dates = Int32Array.from([D0, D0 + 1, D0 + 2, D0 + 8]);
    const probs = [0, 1, 2, 3].map(() => [0.9, 0.05, 0.03, 0.02]);
    const quality = { rows: 30, nulls: 3, duplicates: 2, gaps: 7, reordered: 1, malformed: 1, splits: 0 };
    const s = summarizeTicker(routed([0, 0, 0, 0], probs, { dates, requestedDays: 10, quality }));
    expect(s.requestedDays).toBe(10);
    expect(s.short).toBe(true);
    // Business days strictly between 2024-01-03 (Wed) and 2024-01-09 (Tue): Thu 4, Fri 5, Mon 8.
    expect(s.quality).toEqual({ rows: 30, dropped: { malformed: 1, badPrice: 3, duplicates: 2 }, gaps: 7, routedGaps: 3 });
    const full = summarizeTicker(routed([0, 0], [[0.9, 0.05, 0.03, 0.02], [0.9, 0.05, 0.03, 0.02]], { requestedDays: 2 }));
    expect(full.requestedDays).toBe(2);
    expect(full.short).toBeUndefined();
    expect(full.quality).toBeUndefined();
  });

  it('breaks ties toward the lowest domain index', () => {
    const s = summarizeTicker(routed([3, 0], [[0.4, 0, 0, 0.6], [0.9, 0, 0, 0.1]]));
    expect(s.domain).toBe('Equities');
    expect(s.confidence).toBeCloseTo(0.65, 6);
  });

  it('ignores NaN returns and volatilities instead of poisoning the totals', () => {
    const t = routed([0, 0], [[1, 0, 0, 0], [1, 0, 0, 0]], { ret: Float32Array.from([NaN, 0.02]), vol: Float32Array.from([NaN, 0.03]) });
    const s = summarizeTicker(t);
    expect(s.totalReturn).toBeCloseTo(0.02, 6);
    expect(s.meanVol).toBeCloseTo(0.03, 6);
  });

  it('rejects inconsistent slices with the message shape', () => {
    expect(() => summarizeTicker(routed([], []))).toThrow('Expected at least one routed day for TEST but received 0');
    const bad = routed([0, 1], [[1, 0, 0, 0]]);
    expect(() => summarizeTicker(bad)).toThrow(AggregateError);
    expect(() => summarizeTicker(bad)).toThrow('Expected length 8 for TEST.probs but received 4');
    expect(() => summarizeTicker(routed([4], [[1, 0, 0, 0]]))).toThrow('Expected domain index 0..3 for TEST.assign[0] but received 4');
  });
});

describe('tickerSeries and the per-day sums', () => {
  it('uses the probability of the assigned domain as daily confidence', () => {
    const s = tickerSeries(routed([2, 0], [[0.1, 0.1, 0.7, 0.1], [0.55, 0.15, 0.15, 0.15]]));
    expect(Array.from(s.confidence)).toEqual([Math.fround(0.7), Math.fround(0.55)]);
    expect(Array.from(s.assign)).toEqual([2, 0]);
  });

  it('sums series by date and class, and merging shards gives the sums of the whole run', () => {
    const a = tickerSeries(routed([2, 0, 1], [[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0]], { ticker: 'GC=F', class: 'Commodities' }));
    const b = tickerSeries(routed([3], [[0, 0, 0, 1]], { ticker: 'X', dates: Int32Array.of(D0 + 5) }));
    const whole = dailyAggregate([a, b]);
    expect(whole.dates).toEqual([D0, D0 + 1, D0 + 2, D0 + 5]);
    // Commodities (index 2) and Unknown (index 4, after the four domains) each have one series.
    expect(whole.classSeries).toEqual([0, 0, 1, 0, 1]);
    expect(whole.assigned.map((r) => r.reduce((x, y) => x + y, 0))).toEqual([1, 1, 1, 1]);
    expect(whole.confN).toEqual([1, 1, 1, 1]);
    const merged = mergeDaily(dailyAggregate([b]), dailyAggregate([a]));
    expect(merged).toEqual(whole);
    // Through JSON (a shard's output in Redis) and back, unchanged and valid.
    expect(validateDailyAggregate(JSON.parse(JSON.stringify(merged)))).toEqual(whole);
  });

  it('draws the same time-series figure from merged shard sums as from the series', () => {
    const input = sampleReportInput({ seed: 5, tickers: 30, days: 40 });
    const shards = [input.series.slice(0, 7), input.series.slice(7, 20), input.series.slice(20)].map((s) => dailyAggregate(s));
    const daily = shards.reduce((acc, d) => mergeDaily(acc, d));
    const fromSeries = timeSeriesFigure(input);
    const fromShards = timeSeriesFigure({ ...input, series: [], daily });
    expect(fromShards.dates).toEqual(fromSeries.dates);
    expect(fromShards.classes.map((c) => c.name)).toEqual(fromSeries.classes.map((c) => c.name));
    fromShards.classes.forEach((c, i) => c.vol.forEach((v, j) => expect(v ?? NaN).toBeCloseTo(fromSeries.classes[i]!.vol[j] ?? NaN, 9)));
    fromShards.confidence.forEach((v, j) => expect(v ?? NaN).toBeCloseTo(fromSeries.confidence[j] ?? NaN, 9));
    expect(fromShards.domainShare).toEqual(fromSeries.domainShare);
  });

  it('rejects malformed sums naming the field', () => {
    const good = dailyAggregate([tickerSeries(routed([0, 1], [[1, 0, 0, 0], [0, 1, 0, 0]]))]);
    expect(() => validateDailyAggregate({ ...good, dates: [D0 + 1, D0] })).toThrow('Expected ascending integer day numbers for daily.dates[1] but received');
    expect(() => validateDailyAggregate({ ...good, confN: [1] }, 'shard.daily')).toThrow('Expected array of 2 numbers for shard.daily.confN but received');
    expect(() => validateDailyAggregate({ ...good, assigned: good.assigned.slice(1) })).toThrow('Expected array of 4 rows for daily.assigned but received');
    expect(() => validateDailyAggregate({ ...good, volN: good.volN.map((r) => r.map(() => -1)) })).toThrow('Expected integer ≥ 0 for daily.volN[0][0] but received -1');
  });

  it('formats day counts as ISO dates', () => {
    expect(dayToIso(0)).toBe('1970-01-01');
    expect(dayToIso(D0)).toBe('2024-01-01');
  });
});
