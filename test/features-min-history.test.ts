import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sourceError } from './helpers/errors.js';
import { ConfigError, loadConfig, minHistoryBars } from '../src/config.js';
import { createSource } from '../src/data/sources/create.js';
import { YahooSource } from '../src/data/sources/yahoo.js';
import { computeFeatures, WARMUP_DAYS } from '../src/data/features/compute.js';
import { decodeFeatureSeries } from '../src/data/features/block.js';
import { NO_CONTEXT } from '../src/data/features/context.js';
import { simulateBars } from '../src/data/sim/simulator.js';
import type { Bar } from '../src/data/types.js';
import featureTask, { barsToColumns, type FeatureTask, type FeatureTaskResult } from '../workers/features.task.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const fixtureDir = path.resolve(repoRoot, '../shared/yahoo-fixtures');
const aaplFixture = path.join(fixtureDir, 'chart-AAPL-2020-08-31-to-2020-11-07.json');

const bars = simulateBars('NEWL', { class: 'Equities', subtype: 'stock' }, 400, 17, '2024-06-28');
const csv = (bs: readonly Bar[]): string =>
  `date,open,high,low,close,adj_close,volume\n${bs.map((b) => [b.date, b.open, b.high, b.low, b.close, b.adjClose, b.volume ?? ''].join(',')).join('\n')}\n`;

const savedEnv = process.env.MIN_HISTORY_BARS;
afterEach(() => {
  if (savedEnv === undefined) delete process.env.MIN_HISTORY_BARS;
  else process.env.MIN_HISTORY_BARS = savedEnv;
});

describe('MIN_HISTORY_BARS', () => {
  it('defaults to 60 and is validated in 20..251, alone and with the whole configuration', () => {
    expect(minHistoryBars({})).toBe(60);
    expect(minHistoryBars({ MIN_HISTORY_BARS: ' 120 ' })).toBe(120);
    expect(minHistoryBars({ MIN_HISTORY_BARS: '20' })).toBe(20);
    expect(minHistoryBars({ MIN_HISTORY_BARS: '251' })).toBe(251);
    expect(loadConfig({}).minHistoryBars).toBe(60);
    expect(loadConfig({ MIN_HISTORY_BARS: '90' }).minHistoryBars).toBe(90);
    for (const bad of ['19', '252', '0', '-60', '60.5', 'sixty']) {
      expect(() => minHistoryBars({ MIN_HISTORY_BARS: bad })).toThrow(ConfigError);
      expect(() => minHistoryBars({ MIN_HISTORY_BARS: bad })).toThrow(`Expected integer in 20..251 for MIN_HISTORY_BARS but received ${JSON.stringify(bad)}`);
    }
    let err: unknown;
    try {
      loadConfig({ MIN_HISTORY_BARS: '10', MOE_BACKEND: 'gpu' });
    } catch (e) {
      err = e;
    }
    expect((err as ConfigError).problems).toContain('Expected integer in 20..251 for MIN_HISTORY_BARS but received "10"');
    expect((err as ConfigError).problems).toHaveLength(2);
  });

  it('is documented in the README table of variables', () => {
    expect(readFileSync(path.join(repoRoot, 'README.md'), 'utf8')).toMatch(/\| `MIN_HISTORY_BARS` \| `60` \|/);
  });
});

describe('csv source: a short history routes from MIN_HISTORY_BARS bars', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'features-min-history-'));
    writeFileSync(path.join(dir, 'B59.csv'), csv(bars.slice(0, 59)));
    writeFileSync(path.join(dir, 'B60.csv'), csv(bars.slice(0, 60)));
    writeFileSync(path.join(dir, 'B130.csv'), csv(bars.slice(0, 130)));
    writeFileSync(path.join(dir, 'FULL.csv'), csv(bars));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('answers NO_DATA below the minimum, naming the count and the minimum', async () => {
    const src = createSource({ source: 'csv', dataDir: dir });
    const err = await sourceError(src.fetch('B59', { days: 250 }));
    expect(err.code).toBe('NO_DATA');
    expect(err.message).toMatch(/^Expected at least 60 clean bars \(500 wanted\) for B59 in .*B59\.csv but received 59 usable of 59 rows \(malformed 0, nulls 0, duplicates 0\)$/);
  });

  it('accepts 60 bars (one token) and a 130-bar listing (71 tokens, all its days when 250 are asked)', async () => {
    const src = createSource({ source: 'csv', dataDir: dir });
    const b60 = await src.fetch('B60', { days: 250 });
    expect(b60.bars).toHaveLength(60);
    expect(computeFeatures('B60', b60.bars, 16).dates).toHaveLength(1);
    const b130 = await src.fetch('B130', { days: 250 });
    expect(b130.bars).toHaveLength(130);
    expect(computeFeatures('B130', b130.bars, 16, NO_CONTEXT, { days: 250 }).dates).toHaveLength(71);
    // A full history: days + WARMUP_DAYS bars, as before.
    const full = await src.fetch('FULL', { days: 100 });
    expect(full.bars).toHaveLength(100 + WARMUP_DAYS);
  });

  it('reads the minimum from the environment at each fetch', async () => {
    process.env.MIN_HISTORY_BARS = '40';
    const src = createSource({ source: 'csv', dataDir: dir });
    expect((await src.fetch('B59', { days: 250 })).bars).toHaveLength(59);
    process.env.MIN_HISTORY_BARS = '100';
    const err = await sourceError(src.fetch('B60', { days: 250 }));
    expect(err.message).toMatch(/^Expected at least 100 clean bars \(500 wanted\) for B60 .* but received 60 usable of 60 rows/);
    process.env.MIN_HISTORY_BARS = '5';
    await expect(src.fetch('B60', { days: 250 })).rejects.toThrow(/Expected integer in 20\.\.251 for MIN_HISTORY_BARS but received "5"/);
  });
});

describe.skipIf(!existsSync(aaplFixture))('yahoo source: the same minimum', () => {
  const body = existsSync(aaplFixture) ? (JSON.parse(readFileSync(aaplFixture, 'utf8')) as { response: { bodyJson: unknown } }).response.bodyJson : null;
  const fixed = (async () => new Response(JSON.stringify(body), { status: 200, headers: { 'content-type': 'application/json' } })) as typeof fetch;

  it('rejects 49 bars under the default minimum of 60 and accepts them under MIN_HISTORY_BARS=40', async () => {
    const err = await sourceError(new YahooSource({ fetch: fixed, retries: 0 }).fetch('AAPL', { days: 10, end: '2020-11-06' }));
    expect(err.code).toBe('NO_DATA');
    expect(err.message).toMatch(/^Expected at least 60 clean daily bars for AAPL .* but received 49 of 49/);
    process.env.MIN_HISTORY_BARS = '40';
    const ok = await new YahooSource({ fetch: fixed, retries: 0 }).fetch('AAPL', { days: 10, end: '2020-11-06' });
    expect(ok.bars).toHaveLength(49);
  });
});

describe('feature task: keeps the routed days', () => {
  const run = async (task: FeatureTask): Promise<{ days: number; dates: Int32Array; x: Float32Array }> => {
    const res: FeatureTaskResult = await featureTask(task);
    if (!('block' in res)) throw new Error(`unexpected ${JSON.stringify(res)}`);
    const s = decodeFeatureSeries(Buffer.from(res.block.buffer, res.block.byteOffset, res.block.byteLength));
    expect(s.dates).toHaveLength(res.days);
    return { days: res.days, dates: s.dates, x: s.x };
  };
  const full = bars.slice(0, 60 + WARMUP_DAYS);

  it('routes a full history on exactly its `days` (last) days, as v3 did', async () => {
    const ref = computeFeatures('T', full, 16);
    for (const days of [60, undefined]) {
      const got = await run({ ticker: 'T', hidden: 16, context: NO_CONTEXT, bars: barsToColumns(full), ...(days !== undefined ? { days } : {}) });
      expect(got.days).toBe(60);
      expect(Array.from(got.dates)).toEqual(Array.from(ref.dates.subarray(ref.dates.length - 60)));
      expect(Array.from(got.x)).toEqual(Array.from(ref.x.subarray(ref.x.length - 60 * 16)));
    }
  });

  it('routes a shorter history on what it has, from bar MIN_HISTORY_BARS − 1 on', async () => {
    const short = bars.slice(0, 100);
    expect((await run({ ticker: 'T', hidden: 16, context: NO_CONTEXT, bars: barsToColumns(short), days: 250 })).days).toBe(41);
    expect((await run({ ticker: 'T', hidden: 16, context: NO_CONTEXT, bars: barsToColumns(short), days: 20 })).days).toBe(20);
    expect((await run({ ticker: 'T', hidden: 16, context: NO_CONTEXT, bars: barsToColumns(short) })).days).toBe(41);
    process.env.MIN_HISTORY_BARS = '30';
    expect((await run({ ticker: 'T', hidden: 16, context: NO_CONTEXT, bars: barsToColumns(short), days: 250 })).days).toBe(71);
  });

  it('gives a simulated run its requested days', async () => {
    expect((await run({ ticker: 'SPY', hidden: 16, context: NO_CONTEXT, sim: { seed: 7, range: { days: 30 } } })).days).toBe(30);
  });
});
