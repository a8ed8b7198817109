import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UnrecoverableError, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sourceError } from './helpers/errors.js';
import { barCacheKey } from '../jobs/keys.js';
import { getBarsCached } from '../workers/bar-cache.js';
import { WARMUP_DAYS } from '../src/data/features/compute.js';
import { SourceError, type DataSource } from '../src/data/sources/create.js';
import { YahooSource, type YahooSourceOptions } from '../src/data/sources/yahoo.js';
import type { FetchRange, SourceResult } from '../src/data/types.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { RedisRateLimiter } from '../workers/rate-limit.js';
import { createSource } from '../src/data/sources/create.js';
import { createLogger } from '../src/log.js';
import { createFetchProcessor } from '../workers/fetch.js';
import { createFeaturePool } from '../workers/pool.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const fixtureDir = path.resolve(repoRoot, '../shared/yahoo-fixtures');
const haveFixtures = existsSync(fixtureDir);
if (!haveFixtures) console.warn(`yahoo-hardening: recorded-answer tests skipped, Yahoo fixtures not found at ${fixtureDir}`);

/** The recorded JSON body of a fixture file. */
function body(file: string): unknown {
  const rec = JSON.parse(readFileSync(path.join(fixtureDir, file), 'utf8')) as { response: { bodyJson: unknown } };
  return rec.response.bodyJson;
}

const json = (b: unknown, status = 200): Response => new Response(JSON.stringify(b), { status, headers: { 'content-type': 'application/json' } });

/** A fetch that plays `answers` in order (the last one repeats) and counts calls. */
function scripted(answers: ((init?: RequestInit) => Response | Promise<Response>)[]): { fetch: typeof fetch; calls: () => number } {
  let n = 0;
  const f = (async (_: unknown, init?: RequestInit) => answers[Math.min(n++, answers.length - 1)]!(init)) as typeof fetch;
  return { fetch: f, calls: () => n };
}

/** Options that record back-off delays instead of sleeping, with a fixed jitter draw. */
function recorded(extra: YahooSourceOptions, draw = 0.5): { opts: YahooSourceOptions; delays: number[] } {
  const delays: number[] = [];
  return {
    delays,
    opts: { ...extra, random: () => draw, sleep: async (ms) => void delays.push(ms) },
  };
}

const TSLA = 'historical-via-chart-dividends-TSLA-no-dividends.json';
const TSLA_RANGE: FetchRange = { days: 20, end: '2023-08-10' };

describe.skipIf(!haveFixtures)('yahoo source: retries, time-outs and permanent failures on recorded answers', () => {
  it('retries a 429 after a jittered back-off and then returns the 200 answer', async () => {
    const tsla = body(TSLA);
    const http = scripted([() => new Response('Too Many Requests', { status: 429 }), () => json(tsla)]);
    const { opts, delays } = recorded({ fetch: http.fetch, backoffMs: 400 }, 0.25);
    const res = await new YahooSource(opts).fetch('TSLA', TSLA_RANGE);
    expect(http.calls()).toBe(2);
    expect(res.bars).toHaveLength(20 + WARMUP_DAYS);
    // First retry: d = 400, waited d/2 + d/2 · 0.25.
    expect(delays).toEqual([250]);
  });

  it('gives up on repeated 5xx with FETCH_FAILED after exponential, capped, jittered waits', async () => {
    const http = scripted([() => new Response('Service Unavailable', { status: 503 })]);
    const { opts, delays } = recorded({ fetch: http.fetch, retries: 4, backoffMs: 100, maxBackoffMs: 500 }, 1);
    const err = await sourceError(new YahooSource(opts).fetch('TSLA', TSLA_RANGE));
    expect(err.code).toBe('FETCH_FAILED');
    expect(err.message).toMatch(/^Expected chart data for TSLA but received HTTP 503/);
    expect(http.calls()).toBe(5);
    expect(delays).toEqual([100, 200, 400, 500]);
  });

  it('keeps the jitter inside [d/2, d] for every draw', () => {
    const lo = new YahooSource({ backoffMs: 1000, random: () => 0 });
    const hi = new YahooSource({ backoffMs: 1000, random: () => 0.999999 });
    for (let k = 0; k < 4; k++) {
      const d = Math.min(8000, 1000 * 2 ** k);
      expect(lo.backoffDelay(k)).toBe(d / 2);
      expect(hi.backoffDelay(k)).toBe(d);
    }
  });

  it('times out a request that never answers, retries it, and says so', async () => {
    // Honours the abort signal like a real fetch on a stalled socket.
    const hang = (init?: RequestInit) =>
      new Promise<Response>((_, reject) => init?.signal?.addEventListener('abort', () => reject(init.signal!.reason as Error)));
    const tsla = body(TSLA);
    const http = scripted([hang, () => json(tsla)]);
    const { opts, delays } = recorded({ fetch: http.fetch, timeoutMs: 50, backoffMs: 10 });
    const res = await new YahooSource(opts).fetch('TSLA', TSLA_RANGE);
    expect(http.calls()).toBe(2);
    expect(delays).toHaveLength(1);
    expect(res.bars.at(-1)!.date).toBe('2023-08-10');

    // A fetch that ignores the signal is still cut off; with no retries left the reason names the time-out.
    const deaf = scripted([() => new Promise<Response>(() => undefined)]);
    const err = await sourceError(new YahooSource({ fetch: deaf.fetch, timeoutMs: 30, retries: 1, sleep: async () => undefined }).fetch('TSLA', TSLA_RANGE));
    expect(err.code).toBe('FETCH_FAILED');
    expect(err.message).toBe('Expected chart data for TSLA within 30 ms but the request timed out');
    expect(deaf.calls()).toBe(2);
  });

  it('fails an unknown or delisted symbol (404) at once, without retrying', async () => {
    const http = scripted([() => json({ chart: { result: null, error: { code: 'Not Found', description: 'No data found, symbol may be delisted' } } }, 404)]);
    const { opts, delays } = recorded({ fetch: http.fetch });
    const err = await sourceError(new YahooSource(opts).fetch('ZZZDELISTED', TSLA_RANGE));
    expect(err.code).toBe('UNKNOWN_TICKER');
    expect(err.message).toBe('Expected a symbol Yahoo knows for ZZZDELISTED but received: No data found, symbol may be delisted');
    expect(http.calls()).toBe(1);
    expect(delays).toEqual([]);

    // A bare 404 page (no Yahoo JSON) is the same verdict.
    const page = scripted([() => new Response('<html>404</html>', { status: 404, headers: { 'content-type': 'text/html' } })]);
    expect((await sourceError(new YahooSource({ fetch: page.fetch }).fetch('ZZZ', TSLA_RANGE))).code).toBe('UNKNOWN_TICKER');
    expect(page.calls()).toBe(1);
  });

  it('fails malformed bodies as BAD_DATA without retrying', async () => {
    const cut = JSON.stringify(body(TSLA)).slice(0, 2000);
    for (const make of [
      () => new Response(cut, { status: 200, headers: { 'content-type': 'application/json' } }),
      () => new Response('<html>Will be right back</html>', { status: 200, headers: { 'content-type': 'text/html' } }),
      () => json({ chart: { result: null, error: null } }),
      () => json(body('chart-notimestamp-weird-quote.fake.json')),
    ]) {
      const http = scripted([make]);
      const err = await sourceError(new YahooSource({ fetch: http.fetch, sleep: async () => undefined }).fetch('TSLA', TSLA_RANGE));
      expect(err.code).toBe('BAD_DATA');
      expect(err.message).toMatch(/^Expected a well-formed chart answer for TSLA but received: .+/);
      expect(http.calls()).toBe(1);
    }
  });

  it('fails an empty series as NO_DATA without retrying', async () => {
    // Yahoo's real answer for a window without trading (a weekend): meta, no timestamps, empty quote arrays.
    const weekend = structuredClone(body('chart-AAPL-2025-02-01-to-2025-02-02-includePrePost-false-interval-1m.json')) as {
      chart: { result: [{ meta: { dataGranularity: string } }] };
    };
    weekend.chart.result[0].meta.dataGranularity = '1d';
    const http = scripted([() => json(weekend)]);
    const err = await sourceError(new YahooSource({ fetch: http.fetch, sleep: async () => undefined }).fetch('AAPL', { days: 5, end: '2025-02-02' }));
    expect(err.code).toBe('NO_DATA');
    expect(err.message).toMatch(/^Expected at least \d+ clean daily bars for AAPL .* but received 0 of 0/);
    expect(http.calls()).toBe(1);
  });

  it('asks the limiter before every attempt, retries included', async () => {
    let acquired = 0;
    const http = scripted([() => new Response('busy', { status: 429 }), () => new Response('busy', { status: 502 }), () => json(body(TSLA))]);
    const { opts } = recorded({ fetch: http.fetch, limiter: { acquire: async () => void acquired++ } });
    await new YahooSource(opts).fetch('TSLA', TSLA_RANGE);
    expect(acquired).toBe(3);
    expect(http.calls()).toBe(3);
  });

  it('refuses bad options with the option named', () => {
    expect(() => new YahooSource({ timeoutMs: 0 })).toThrow('Expected integer >= 1 for timeoutMs but received 0');
    expect(() => new YahooSource({ retries: -1 })).toThrow('Expected integer >= 0 for retries but received -1');
  });
});

describe('shared Redis rate limit and bar cache', () => {
  const prefix = `t-yh-${randomUUID().slice(0, 8)}`;
  let a: Redis;
  let b: Redis;

  beforeAll(() => {
    a = createRedis('redis://127.0.0.1:6379');
    b = createRedis('redis://127.0.0.1:6379');
  });

  afterAll(async () => {
    for await (const keys of a.scanStream({ match: `${prefix}:*`, count: 500 })) {
      if ((keys as string[]).length > 0) await a.del(...(keys as string[]));
    }
    await Promise.all([closeRedis(a), closeRedis(b)]);
  });

  it('holds two limiters on separate connections to one rate together', async () => {
    const key = `${prefix}:ratelimit:yahoo`;
    const windowMs = 200;
    const one = new RedisRateLimiter({ redis: a, key, max: 3, windowMs });
    const two = new RedisRateLimiter({ redis: b, key, max: 3, windowMs });
    // Each grant comes with its time on Redis' clock, the one the limiter counts windows by (a TIME read after the
    // grant could fall into the next window on a loaded machine).
    const stamps: number[] = [];
    const grab = async (l: RedisRateLimiter) => {
      const granted = await l.acquire();
      const [sec, usec] = await a.time();
      expect(granted).toBeLessThanOrEqual(Number(sec) * 1000 + Math.floor(Number(usec) / 1000));
      stamps.push(granted);
    };
    await Promise.all([...Array.from({ length: 6 }, () => grab(one)), ...Array.from({ length: 6 }, () => grab(two))]);
    expect(stamps).toHaveLength(12);
    // 12 grants at 3 per window need at least four windows; whatever the machine's load, never fewer.
    const windows = new Set(stamps.map((t) => Math.floor(t / windowMs)));
    expect(windows.size).toBeGreaterThanOrEqual(4);
    expect(Math.max(...stamps) - Math.min(...stamps)).toBeGreaterThanOrEqual(2 * windowMs);
    expect(() => new RedisRateLimiter({ redis: a, key, max: 0 })).toThrow('Expected positive integer for max but received 0');
  });

  /** A source that counts fetches and answers after a short delay, so concurrent callers overlap. */
  function countingSource(fail?: SourceError): DataSource & { calls: string[] } {
    const calls: string[] = [];
    return {
      name: 'yahoo',
      calls,
      async fetch(ticker: string, range: FetchRange): Promise<SourceResult> {
        calls.push(`${ticker}:${range.days}:${range.end}`);
        await new Promise((r) => setTimeout(r, 50));
        if (fail) throw fail;
        return {
          ticker,
          bars: [{ date: range.end!, open: 1, high: 2, low: 0.5, close: 1.5, adjClose: 1.4, volume: null }],
          quality: { nulls: 0, duplicates: 0, gaps: 0, reordered: 0 },
          class: 'Equities',
        };
      },
    };
  }

  it('fetches a ticker and range once across concurrent callers on separate connections, then serves Redis', async () => {
    const src = countingSource();
    const range = { days: 60, end: '2024-05-31' };
    const [r1, r2, r3] = await Promise.all([
      getBarsCached({ redis: a, prefix, pollMs: 10 }, src, 'spy', range),
      getBarsCached({ redis: b, prefix, pollMs: 10 }, src, 'SPY', range),
      getBarsCached({ redis: b, prefix, pollMs: 10 }, src, 'SPY', range),
    ]);
    expect(src.calls).toEqual(['SPY:60:2024-05-31']);
    expect([r1.cached, r2.cached, r3.cached].filter((c) => !c)).toHaveLength(1);
    expect(r2.bars).toEqual(r1.bars);
    expect(r2.class).toBe('Equities');
    expect(r2.bars[0]!.volume).toBeNull();

    const key = barCacheKey(prefix, 'yahoo', 'SPY', range);
    const ttl = await a.ttl(key);
    expect(ttl).toBeGreaterThan(86_000);
    expect(ttl).toBeLessThanOrEqual(86_400);

    // Another range is another key.
    await getBarsCached({ redis: a, prefix }, src, 'SPY', { days: 61, end: '2024-05-31' });
    expect(src.calls).toHaveLength(2);
  });

  it('does not cache failures, and lets the next caller try', async () => {
    const err = new SourceError('FETCH_FAILED', 'IEF', 'Expected chart data for IEF but received HTTP 503: busy');
    const bad = countingSource(err);
    const range = { days: 30, end: '2024-05-31' };
    await expect(getBarsCached({ redis: a, prefix }, bad, 'IEF', range)).rejects.toBe(err);
    expect(await a.exists(barCacheKey(prefix, 'yahoo', 'IEF', range), `${barCacheKey(prefix, 'yahoo', 'IEF', range)}:lock`)).toBe(0);
    const good = countingSource();
    expect((await getBarsCached({ redis: a, prefix }, good, 'IEF', range)).cached).toBe(false);
    expect(good.calls).toHaveLength(1);
  });
});

describe.skipIf(!haveFixtures)('fetch worker on yahoo: cache across runs, permanent failures', () => {
  const prefix = `t-yhw-${randomUUID().slice(0, 8)}`;
  let redis: Redis;

  beforeAll(() => {
    redis = createRedis('redis://127.0.0.1:6379');
  });

  afterAll(async () => {
    for await (const keys of redis.scanStream({ match: `${prefix}:*`, count: 500 })) {
      if ((keys as string[]).length > 0) await redis.del(...(keys as string[]));
    }
    await closeRedis(redis);
  });

  it('fetches a ticker once for two runs, and fails a delisted one at once with the reason', async () => {
    const tsla = body(TSLA);
    const urls: string[] = [];
    const http = (async (input: Parameters<typeof fetch>[0]) => {
      const url = String(input instanceof Request ? input.url : input);
      urls.push(url);
      if (url.includes('/chart/TSLA')) return json(tsla);
      return json({ chart: { result: null, error: { code: 'Not Found', description: 'No data found, symbol may be delisted' } } }, 404);
    }) as typeof fetch;
    const pool = createFeaturePool(1);
    try {
      const p = createFetchProcessor({
        redis,
        prefix,
        featureTtlSeconds: 60,
        runTtlSeconds: 60,
        hidden: 16,
        pool,
        logger: createLogger({ name: 't', level: 'silent' }),
        sourceFactory: (o) => createSource({ ...o, fetch: http }),
        yahoo: { sleep: async () => undefined },
        barCache: { redis, prefix, ttlSeconds: 120 },
      });
      const job = (runId: string, ticker: string) =>
        ({ id: `fetch_${runId}_${ticker}`, data: { runId, ticker, source: 'yahoo', range: TSLA_RANGE }, attemptsMade: 0, opts: { attempts: 3 } }) as unknown as Job;
      const a = await p(job(randomUUID(), 'TSLA'));
      const b = await p(job(randomUUID(), 'TSLA'));
      expect(a.days).toBe(20);
      expect(b.days).toBe(20);
      expect(b.key).not.toBe(a.key);
      expect(urls.filter((u) => u.includes('/chart/TSLA'))).toHaveLength(1);

      const err = await p(job(randomUUID(), 'ZZZDELISTED')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnrecoverableError);
      expect((err as Error).message).toBe('UNKNOWN_TICKER: Expected a symbol Yahoo knows for ZZZDELISTED but received: No data found, symbol may be delisted');
      expect(urls.filter((u) => u.includes('ZZZDELISTED'))).toHaveLength(1);
    } finally {
      await pool.destroy();
    }
  });
});
