import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { SourceError } from '../src/data/sources/create.js';
import { YahooSource } from '../src/data/sources/yahoo.js';
import { computeFeatures, MIN_HISTORY_BARS, WARMUP_DAYS } from '../src/data/features/compute.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const fixtureDir = path.resolve(repoRoot, '../shared/yahoo-fixtures');
const haveFixtures = existsSync(fixtureDir);
if (!haveFixtures) console.warn(`data-yahoo: skipped, recorded Yahoo answers not found at ${fixtureDir}`);

interface Fixture {
  file: string;
  symbol: string;
  interval: string;
  period1: number;
  period2: number;
  status: number;
  body: unknown;
}

function loadFixtures(): Fixture[] {
  return readdirSync(fixtureDir)
    .filter((f) => f.endsWith('.json'))
    .map((file) => {
      const rec = JSON.parse(readFileSync(path.join(fixtureDir, file), 'utf8')) as {
        request: { url: string };
        response: { status: number; bodyJson: unknown };
      };
      const url = new URL(rec.request.url);
      return {
        file,
        symbol: decodeURIComponent(url.pathname.split('/').pop() ?? ''),
        interval: url.searchParams.get('interval') ?? '1d',
        period1: Number(url.searchParams.get('period1')),
        period2: Number(url.searchParams.get('period2')),
        status: rec.response.status,
        body: rec.response.bodyJson,
      };
    });
}

const json = (body: unknown, status = 200): Response =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });

const NOT_FOUND = { chart: { result: null, error: { code: 'Not Found', description: 'No data found, symbol may be delisted' } } };

/**
 * A `fetch` that answers chart requests from the recorded files: same symbol and interval, and among those the
 * file whose period overlaps the requested one most (hand-edited `.fake.json` answers only when asked for by name).
 */
function replayFetch(fixtures: Fixture[], log: string[] = []): typeof fetch {
  return (async (input: string | URL | Request) => {
    const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
    log.push(url.href);
    const symbol = decodeURIComponent(url.pathname.split('/').pop() ?? '');
    const p1 = Number(url.searchParams.get('period1'));
    const p2 = Number(url.searchParams.get('period2'));
    const interval = url.searchParams.get('interval') ?? '1d';
    let best: Fixture | undefined;
    let bestOverlap = 0;
    for (const f of fixtures) {
      if (f.file.endsWith('.fake.json') || f.symbol !== symbol || f.interval !== interval) continue;
      const overlap = Math.min(p2, f.period2) - Math.max(p1, f.period1);
      if (overlap > bestOverlap) {
        best = f;
        bestOverlap = overlap;
      }
    }
    return best ? json(best.body, best.status) : json(NOT_FOUND, 404);
  }) as typeof fetch;
}

const fixedFetch = (body: unknown, status = 200): typeof fetch => (async () => json(body, status)) as typeof fetch;

async function expectSourceError(p: Promise<unknown>, code: string, pattern: RegExp): Promise<SourceError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SourceError);
  const se = err as SourceError;
  expect(se.code).toBe(code);
  expect(se.message).toMatch(pattern);
  return se;
}

describe.skipIf(!haveFixtures)('yahoo source on recorded chart answers', () => {
  const fixtures = haveFixtures ? loadFixtures() : [];
  const byFile = (name: string): Fixture => {
    const f = fixtures.find((x) => x.file === name);
    if (!f) throw new Error(`fixture ${name} missing`);
    return f;
  };

  it('maps the AAPL 2020 split/dividend series to adjusted bars', async () => {
    const src = new YahooSource({ fetch: replayFetch(fixtures), minBars: 20 });
    const res = await src.fetch('aapl', { days: 10, end: '2020-11-06' });
    expect(res.ticker).toBe('AAPL');
    expect(res.class).toBe('Equities');
    expect(res.bars).toHaveLength(49);
    expect(res.bars[0]!.date).toBe('2020-08-31');
    expect(res.bars[48]!.date).toBe('2020-11-06');
    expect(res.quality).toMatchObject({ nulls: 0, duplicates: 0, reordered: 0 });
    const first = res.bars[0]!;
    // Yahoo's close is split-adjusted, adjclose also carries the 0.205 dividend of 2020-11-06.
    expect(first.close).toBeCloseTo(129.04, 2);
    expect(first.adjClose).toBeCloseTo(125.8267, 3);
    expect(first.open).toBeCloseTo(127.58 * (first.adjClose / first.close), 4);
    expect(first.high).toBeGreaterThanOrEqual(Math.max(first.open, first.adjClose));
    expect(first.low).toBeLessThanOrEqual(Math.min(first.open, first.adjClose));
    // No day moves by a split ratio: the 4:1 split of 2020-08-31 is already inside the prices.
    for (let i = 1; i < res.bars.length; i++) {
      expect(Math.abs(Math.log(res.bars[i]!.adjClose / res.bars[i - 1]!.adjClose))).toBeLessThan(0.15);
    }
  });

  it('rejects the short AAPL series with the default minimum and says how many bars came', async () => {
    const src = new YahooSource({ fetch: replayFetch(fixtures) });
    await expectSourceError(
      src.fetch('AAPL', { days: 10, end: '2020-11-06' }),
      'NO_DATA',
      new RegExp(`^Expected at least ${MIN_HISTORY_BARS} clean daily bars for AAPL .* but received 49 of 49`),
    );
  });

  it('trims the long TSLA series to days + warm-up and yields finite features', async () => {
    const log: string[] = [];
    const src = new YahooSource({ fetch: replayFetch(fixtures, log) });
    const res = await src.fetch('TSLA', { days: 250, end: '2023-08-10' });
    expect(log).toHaveLength(1);
    expect(log[0]).toContain('/v8/finance/chart/TSLA');
    expect(log[0]).toContain('interval=1d');
    expect(res.bars).toHaveLength(250 + WARMUP_DAYS);
    expect(res.bars.at(-1)!.date).toBe('2023-08-10');
    const f = computeFeatures('TSLA', res.bars, 32, undefined, { days: 250 });
    expect(f.dates.length).toBe(250);
    expect(f.x.every(Number.isFinite)).toBe(true);
    // TSLA split 3:1 in August 2022 inside this window; the adjusted series shows no such jump.
    expect(Math.max(...Array.from(f.ret, Math.abs))).toBeLessThan(0.25);
  });

  it('reads the NVDA split year and the MSFT dividend year', async () => {
    // One year each: fewer bars than days + warm-up, so the source hands over all it got.
    const src = new YahooSource({ fetch: replayFetch(fixtures), minBars: 100 });
    const nvda = await src.fetch('NVDA', { days: 150, end: '2022-01-28' });
    expect(nvda.bars).toHaveLength(252);
    expect(nvda.bars.at(-1)!.date).toBe('2022-01-28');
    expect(nvda.quality.splits).toBe(0);
    const msft = await src.fetch('MSFT', { days: 150, end: '2022-01-28' });
    expect(msft.bars).toHaveLength(252);
    const div = msft.bars.filter((b) => Math.abs(b.close - b.adjClose) > 1e-9);
    expect(div.length).toBeGreaterThan(100);
  });

  it('counts null quotes instead of failing', async () => {
    const body = structuredClone(byFile('historical-via-chart-MSFT-dividends-2021-02-01-to-2022-01-31.csv.json').body) as {
      chart: { result: [{ indicators: { quote: [Record<string, (number | null)[]>]; adjclose: [{ adjclose: (number | null)[] }] } }] };
    };
    const ind = body.chart.result[0].indicators;
    for (const i of [200, 201, 230]) ind.quote[0]['close']![i] = null;
    ind.adjclose[0].adjclose[210] = null;
    ind.quote[0]['volume']![100] = null;
    const src = new YahooSource({ fetch: fixedFetch(body), minBars: 100 });
    const res = await src.fetch('MSFT', { days: 150, end: '2022-01-31' });
    expect(res.quality.nulls).toBe(4);
    expect(res.bars).toHaveLength(252 - 4);
    expect(res.bars.some((b) => b.volume === null)).toBe(true);
  });

  it('turns malformed answers into BAD_DATA errors', async () => {
    for (const name of ['chart-notimestamp-quotes-length.fake.json', 'chart-notimestamp-weird-quote.fake.json']) {
      const src = new YahooSource({ fetch: fixedFetch(byFile(name).body) });
      await expectSourceError(src.fetch('AAPL', { days: 5, end: '2020-01-03' }), 'BAD_DATA', /^Expected a well-formed chart answer for AAPL but received: .+/);
    }
    const hourly = new YahooSource({ fetch: fixedFetch(byFile('chart-TSLA-2025-01-01-to-2025-01-02-interval-1h.fake.json').body) });
    await expectSourceError(hourly.fetch('TSLA', { days: 5, end: '2025-01-02' }), 'BAD_DATA', /^Expected daily bars \(1d\) for TSLA but received granularity "1h"/);
  });

  it('reports unknown symbols without retrying', async () => {
    const log: string[] = [];
    const src = new YahooSource({ fetch: replayFetch(fixtures, log), backoffMs: 1 });
    await expectSourceError(src.fetch('NOSUCH1', { days: 5, end: '2020-01-03' }), 'UNKNOWN_TICKER', /NOSUCH1.*No data found/);
    expect(log).toHaveLength(1);
  });

  it('retries 429 and 5xx with back-off, then gives up with FETCH_FAILED', async () => {
    const tsla = byFile('historical-via-chart-dividends-TSLA-no-dividends.json').body;
    let calls = 0;
    const flaky = (async () => (++calls <= 2 ? new Response('Too Many Requests', { status: 429 }) : json(tsla))) as typeof fetch;
    const ok = await new YahooSource({ fetch: flaky, backoffMs: 1 }).fetch('TSLA', { days: 20, end: '2023-08-10' });
    expect(calls).toBe(3);
    expect(ok.bars).toHaveLength(20 + WARMUP_DAYS);

    let failing = 0;
    const down = (async () => {
      failing++;
      return new Response('Bad Gateway', { status: 502 });
    }) as typeof fetch;
    await expectSourceError(
      new YahooSource({ fetch: down, retries: 2, backoffMs: 1 }).fetch('TSLA', { days: 20, end: '2023-08-10' }),
      'FETCH_FAILED',
      /^Expected chart data for TSLA but received HTTP 502/,
    );
    expect(failing).toBe(3);
  });

  it('rejects an invalid ticker before any request', async () => {
    const log: string[] = [];
    const src = new YahooSource({ fetch: replayFetch(fixtures, log) });
    await expectSourceError(src.fetch('../etc/passwd', { days: 5 }), 'UNKNOWN_TICKER', /^Expected ticker of 1-15 characters .* but received "\.\.\/etc\/passwd"/);
    expect(log).toHaveLength(0);
  });
});
