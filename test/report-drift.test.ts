import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOMAINS, type Domain } from '../src/domains.js';
import {
  compareRuns,
  driftLevel,
  isUniverseRunRecord,
  populationStabilityIndex,
  routingMix,
  runRecord,
  universeId,
} from '../src/report/drift.js';
import { ReportError } from '../src/report/errors.js';
import { timeSeriesFigure } from '../src/report/figure-data.js';
import { renderFigure } from '../src/report/render-figure.js';
import { sampleReportInput } from '../src/report/sample-input.js';
import { buildSummaryMarkdown } from '../src/report/summary-markdown.js';
import type { TickerSummary } from '../src/report/types.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { universeKey } from '../jobs/keys.js';
import { HISTORY_RUNS, previousUniverseRun, recordUniverseRun } from '../workers/universe-history.js';

function routed(ticker: string, domain: Domain, confidence = 0.8): TickerSummary {
  const d = DOMAINS.indexOf(domain);
  const probs = [0, 0, 0, 0].map((_, i) => (i === d ? confidence : (1 - confidence) / 3)) as [number, number, number, number];
  return {
    ticker,
    domain,
    probs,
    confidence,
    days: 10,
    domainDays: [0, 0, 0, 0].map((_, i) => (i === d ? 10 : 0)) as [number, number, number, number],
    totalReturn: 0,
    meanVol: 0.01,
    firstDate: '2026-11-01',
    lastDate: '2026-11-14',
  };
}

describe('routing mix and PSI', () => {
  it('counts tickers per domain, their shares and the mean confidence', () => {
    const mix = routingMix([routed('A', 'Equities', 0.9), routed('B', 'Equities', 0.7), routed('C', 'Derivatives', 0.5), routed('D', 'Fixed Income', 0.6)]);
    expect(mix.routed).toBe(4);
    expect(mix.counts).toEqual({ Equities: 2, 'Fixed Income': 1, Commodities: 0, Derivatives: 1 });
    expect(mix.share).toEqual({ Equities: 0.5, 'Fixed Income': 0.25, Commodities: 0, Derivatives: 0.25 });
    expect(mix.meanConfidence).toBeCloseTo(0.675, 12);
    expect(routingMix([])).toEqual({
      routed: 0,
      counts: { Equities: 0, 'Fixed Income': 0, Commodities: 0, Derivatives: 0 },
      share: { Equities: 0, 'Fixed Income': 0, Commodities: 0, Derivatives: 0 },
      meanConfidence: 0,
    });
  });

  it('computes PSI = Σ (a − e) ln(a / e), symmetric, 0 for equal mixes, floored for empty domains', () => {
    expect(populationStabilityIndex([0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25])).toBe(0);
    const e = [0.4, 0.3, 0.2, 0.1];
    const a = [0.3, 0.3, 0.3, 0.1];
    const want = (0.3 - 0.4) * Math.log(0.3 / 0.4) + (0.3 - 0.2) * Math.log(0.3 / 0.2);
    expect(populationStabilityIndex(e, a)).toBeCloseTo(want, 12);
    expect(populationStabilityIndex(a, e)).toBeCloseTo(want, 12);
    // One domain from nothing to a quarter: finite thanks to the 1e-4 floor, and "significant".
    const psi = populationStabilityIndex([1 / 3, 1 / 3, 1 / 3, 0], [0.25, 0.25, 0.25, 0.25]);
    expect(psi).toBeCloseTo(3 * (0.25 - 1 / 3) * Math.log(0.25 / (1 / 3)) + (0.25 - 1e-4) * Math.log(0.25 / 1e-4), 12);
    expect(driftLevel(psi)).toBe('significant');
  });

  it('reads PSI bands as stable < 0.1 ≤ moderate < 0.25 ≤ significant', () => {
    expect(driftLevel(0)).toBe('stable');
    expect(driftLevel(0.0999)).toBe('stable');
    expect(driftLevel(0.1)).toBe('moderate');
    expect(driftLevel(0.2499)).toBe('moderate');
    expect(driftLevel(0.25)).toBe('significant');
  });

  it('rejects share arrays of different lengths with a message naming them', () => {
    expect(() => populationStabilityIndex([0.5, 0.5], [1])).toThrow(ReportError);
    expect(() => populationStabilityIndex([0.5, 0.5], [1])).toThrow('Expected two share arrays of the same non-zero length for populationStabilityIndex but received lengths 2 and 1');
  });
});

describe('compareRuns', () => {
  const before = [routed('SPY', 'Equities', 0.9), routed('TLT', 'Fixed Income', 0.8), routed('GLD', 'Commodities', 0.7), routed('OLD', 'Equities', 0.6)];
  const previous = runRecord('11111111-1111-4111-8111-111111111111', '2026-11-19T21:00:00.000Z', '2026-11-19T21:00:04.000Z', before);

  it('lists tickers routed in both runs whose domain changed, in this run order, with PSI and confidence change', () => {
    const now = [routed('GLD', 'Derivatives', 0.5), routed('SPY', 'Equities', 0.9), routed('TLT', 'Equities', 0.6), routed('NEW', 'Commodities', 0.8)];
    const d = compareRuns('u1', now, previous);
    expect(d.previousRunId).toBe(previous.runId);
    expect(d.previousCreatedAt).toBe('2026-11-19T21:00:00.000Z');
    expect(d.compared).toBe(3);
    expect(d.changed).toEqual([
      { ticker: 'GLD', from: 'Commodities', to: 'Derivatives' },
      { ticker: 'TLT', from: 'Fixed Income', to: 'Equities' },
    ]);
    expect(d.previousShare).toEqual({ Equities: 0.5, 'Fixed Income': 0.25, Commodities: 0.25, Derivatives: 0 });
    expect(d.psi).toBeCloseTo(populationStabilityIndex([0.5, 0.25, 0.25, 0], [0.5, 0, 0.25, 0.25]), 12);
    expect(d.level).toBe('significant');
    expect(d.previousMeanConfidence).toBeCloseTo(0.75, 12);
    expect(d.meanConfidenceChange).toBeCloseTo(0.7 - 0.75, 12);
  });

  it('finds no drift when the routing is the same', () => {
    const d = compareRuns('u1', before, previous);
    expect(d.psi).toBe(0);
    expect(d.level).toBe('stable');
    expect(d.changed).toEqual([]);
    expect(d.compared).toBe(4);
  });

  it('keys a universe by source and ticker set, not order or duplicates', () => {
    expect(universeId('yahoo', ['SPY', 'TLT'])).toBe(universeId('yahoo', ['TLT', 'SPY', 'SPY']));
    expect(universeId('yahoo', ['SPY', 'TLT'])).not.toBe(universeId('sim', ['SPY', 'TLT']));
    expect(universeId('yahoo', ['SPY', 'TLT'])).not.toBe(universeId('yahoo', ['SPY']));
    expect(universeId('yahoo', ['SPY'])).toMatch(/^[0-9a-f]{16}$/);
  });

  it('accepts only well-formed stored records', () => {
    expect(isUniverseRunRecord(previous)).toBe(true);
    expect(isUniverseRunRecord({ ...previous, domains: '0124' })).toBe(false);
    expect(isUniverseRunRecord({ ...previous, domains: '01' })).toBe(false);
    expect(isUniverseRunRecord({ ...previous, meanConfidence: 'x' })).toBe(false);
    expect(isUniverseRunRecord(null)).toBe(false);
  });
});

describe('summary.md and the time-series figure show the drift', () => {
  const first = sampleReportInput({ seed: 21, tickers: 16, days: 40 });
  const record = runRecord('22222222-2222-4222-8222-222222222222', '2026-11-19T21:00:00.000Z', '2026-11-19T21:00:03.000Z', first.summary.tickers);
  const second = sampleReportInput({ seed: 22, tickers: 16, days: 40, previous: record });

  it('has a mix table, the PSI with its bands and every changed ticker', () => {
    const d = second.summary.drift!;
    expect(d.changed.length).toBeGreaterThan(0);
    const md = buildSummaryMarkdown(second.summary);
    expect(md).toContain('## Routing mix and drift');
    expect(md).toContain('| domain | tickers | share | previous run |');
    const eq = second.summary.routing;
    expect(md).toContain(`| Equities | ${eq.counts.Equities} | ${(eq.share.Equities * 100).toFixed(1)} % | ${(d.previousShare.Equities * 100).toFixed(1)} % |`);
    expect(md).toContain(`population stability index **${d.psi.toFixed(3)}, ${d.level}** (stable below 0.1, moderate below 0.25, significant from 0.25)`);
    expect(md).toContain(`${d.changed.length} of ${d.compared} tickers routed in both runs changed domain:`);
    for (const c of d.changed) expect(md).toContain(`| ${c.ticker} | ${c.from} | ${c.to} |`);
    expect(md).toContain(`- Against the previous run of this universe the domain mix is **${d.level}** (PSI ${d.psi.toFixed(3)}); ${d.changed.length} of ${d.compared} tickers changed domain;`);
    expect(md).toContain(`Mean confidence over routed tickers: ${eq.meanConfidence.toFixed(3)} (previous run ${d.previousMeanConfidence.toFixed(3)}`);
  });

  it('says when there is no previous run to compare with', () => {
    const md = buildSummaryMarkdown(first.summary);
    expect(first.summary.drift).toBeNull();
    expect(md).toContain(`No drift measured: this is the first recorded run of universe \`${first.summary.universe}\``);
    expect(md).not.toContain('previous run |');
  });

  it('draws the drift panel (third, 600 CSS px) with both runs and ink in it', async () => {
    const fig = timeSeriesFigure(second);
    expect(fig.drift.previous?.runId).toBe(record.runId);
    expect(fig.drift.share.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    const withDrift = await sharp(await renderFigure(fig)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const without = await sharp(await renderFigure(timeSeriesFigure(first))).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    expect(withDrift.info.width).toBe((900 + 560 + 600) * 2);
    expect(without.info.width).toBe(withDrift.info.width);
    // The drift panel of the second run has twice the bars of the first run's: more coloured pixels in it.
    const ink = (img: typeof withDrift) => {
      let n = 0;
      for (let y = 128; y < img.info.height; y++) {
        for (let x = (900 + 560) * 2; x < img.info.width; x++) {
          const i = (y * img.info.width + x) * 3;
          if (Math.max(img.data[i]!, img.data[i + 1]!, img.data[i + 2]!) - Math.min(img.data[i]!, img.data[i + 1]!, img.data[i + 2]!) > 40) n++;
        }
      }
      return n;
    };
    expect(ink(without)).toBeGreaterThan(10_000);
    expect(ink(withDrift)).toBeGreaterThan(ink(without) * 1.3);
  });
});

describe('universe history in Redis', () => {
  let redis: Redis;
  const prefix = `t-drift-${randomUUID().slice(0, 8)}`;
  const u = 'abcdef0123456789';
  const rec = (i: number, domain: Domain = 'Equities') =>
    runRecord(`00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, new Date(Date.UTC(2026, 10, 1 + i, 21)).toISOString(), new Date(Date.UTC(2026, 10, 1 + i, 22)).toISOString(), [routed('SPY', domain)]);

  beforeAll(() => {
    redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  });
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    await closeRedis(redis);
  });

  it('returns the newest run created before this one, never this run itself', async () => {
    expect(await previousUniverseRun(redis, prefix, u, rec(5).runId, rec(5).createdAt)).toBeUndefined();
    await recordUniverseRun(redis, prefix, u, rec(1));
    await recordUniverseRun(redis, prefix, u, rec(3));
    await recordUniverseRun(redis, prefix, u, rec(2));
    expect((await previousUniverseRun(redis, prefix, u, rec(5).runId, rec(5).createdAt))?.runId).toBe(rec(3).runId);
    // A report that reports late (created between 1 and 3) compares with run 2, not with the newer run 3.
    expect((await previousUniverseRun(redis, prefix, u, rec(3).runId, rec(3).createdAt))?.runId).toBe(rec(2).runId);
    // A retried report of run 3, after it recorded itself, still compares with run 2.
    expect((await previousUniverseRun(redis, prefix, u, rec(3).runId, rec(3).createdAt))?.runId).toBe(rec(2).runId);
    expect(await redis.ttl(universeKey(prefix, u))).toBeGreaterThan(30 * 86_400);
  });

  it(`keeps the newest ${HISTORY_RUNS} runs and ignores unreadable entries`, async () => {
    const key = universeKey(prefix, 'trim');
    await redis.hset(key, 'junk', '{not json');
    for (let i = 1; i <= HISTORY_RUNS + 3; i++) await recordUniverseRun(redis, prefix, 'trim', rec(i), 600);
    const ids = Object.keys(await redis.hgetall(key)).sort();
    expect(ids).toEqual(Array.from({ length: HISTORY_RUNS }, (_, k) => rec(k + 4).runId).sort());
    expect(await redis.ttl(key)).toBeLessThanOrEqual(600);
    await redis.hset(key, 'zzz', '{"runId":"zzz"}');
    expect((await previousUniverseRun(redis, prefix, 'trim', 'x', '2030-01-01T00:00:00Z'))?.runId).toBe(rec(HISTORY_RUNS + 3).runId);
  });
});
