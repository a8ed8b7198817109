import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOMAINS } from '../src/domains.js';
import { universeId } from '../src/report/drift.js';
import { REPORT_FILES } from '../src/report/types.js';
import { readRunMeta } from '../jobs/run-meta.js';
import { universeKey } from '../jobs/keys.js';
import { startTestPipeline, type TestPipeline } from './helpers/pipeline.js';

const UNIVERSE = ['SPY', 'QQQ', 'TLT', 'SHY', 'GLD', 'USO', 'UVXY', 'SQQQ'];

describe('drift across runs of the same universe (real workers and Redis)', () => {
  let p: TestPipeline;
  beforeAll(async () => {
    p = await startTestPipeline('drift');
  });
  afterAll(async () => {
    await p?.close();
  });

  it('compares the second run with the first, and a run of another universe with nothing', async () => {
    // Different simulator seeds give different paths, so some tickers change domain between the two runs.
    const first = await p.run({ tickers: UNIVERSE, source: 'sim', range: { days: 40 }, seed: 1 });
    const second = await p.run({ tickers: [...UNIVERSE].reverse(), source: 'sim', range: { days: 40 }, seed: 2 });
    const other = await p.run({ tickers: UNIVERSE.slice(0, 4), source: 'sim', range: { days: 40 }, seed: 2 });
    for (const r of [first, second, other]) expect(r.meta.status).toBe('finished');

    const s1 = await p.summary(first.meta);
    const s2 = await p.summary(second.meta);
    const s3 = await p.summary(other.meta);
    expect(s1.universe).toBe(universeId('sim', UNIVERSE));
    expect(s2.universe).toBe(s1.universe);
    expect(s3.universe).not.toBe(s1.universe);
    expect(s1.drift).toBeNull();
    expect(s3.drift).toBeNull();

    // Distribution and mean confidence agree with the per-ticker results.
    for (const s of [s1, s2]) {
      expect(s.routing.routed).toBe(UNIVERSE.length);
      for (const d of DOMAINS) expect(s.routing.counts[d]).toBe(s.tickers.filter((t) => t.domain === d).length);
      const mean = s.tickers.reduce((a, t) => a + t.confidence, 0) / s.tickers.length;
      expect(s.routing.meanConfidence).toBeCloseTo(mean, 12);
    }

    const d = s2.drift!;
    expect(d.previousRunId).toBe(first.run.runId);
    expect(d.compared).toBe(UNIVERSE.length);
    const before = new Map(s1.tickers.map((t) => [t.ticker, t.domain]));
    const moved = s2.tickers.filter((t) => before.get(t.ticker) !== t.domain).map((t) => ({ ticker: t.ticker, from: before.get(t.ticker), to: t.domain }));
    expect(d.changed).toEqual(moved);
    expect(d.previousShare).toEqual(s1.routing.share);
    expect(d.meanConfidenceChange).toBeCloseTo(s2.routing.meanConfidence - s1.routing.meanConfidence, 12);
    expect(d.psi).toBeGreaterThanOrEqual(0);

    const md = await readFile(path.join(second.meta.reportDir!, REPORT_FILES.summaryMd), 'utf8');
    expect(md).toContain(`Against run ${first.run.runId}`);
    expect(await p.redis.hlen(universeKey(p.config.prefix, s1.universe))).toBe(2);

    // The run hash carries what the dashboard lists: backend and failures.
    const meta = await readRunMeta(p.redis, p.config.prefix, second.run.runId);
    expect(meta?.backend).toBe(s2.backend);
    expect(meta?.failedTickers).toBe(0);
  });
});
