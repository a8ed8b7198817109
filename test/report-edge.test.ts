import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Piscina } from 'piscina';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReportError } from '../src/report/errors.js';
import { createRenderPool, warmRenderPool } from '../src/report/pool.js';
import { workerExecArgv } from '../src/util/task-pool.js';
import { renderReports } from '../src/report/render-reports.js';
import { sampleReportInput } from '../src/report/sample-input.js';
import { REPORT_FILES, type ReportInput } from '../src/report/types.js';

const PNGS = [REPORT_FILES.routing, REPORT_FILES.conditions, REPORT_FILES.timeSeries, REPORT_FILES.performance];

async function expectDrawnPng(file: string, minWidth: number): Promise<void> {
  const img = sharp(file);
  const meta = await img.metadata();
  expect(meta.format).toBe('png');
  expect(meta.width).toBeGreaterThanOrEqual(minWidth);
  const stats = await img.stats();
  expect(Math.max(...stats.channels.slice(0, 3).map((c) => c.stdev)), file).toBeGreaterThan(10);
}

describe('renderReports on edge-case runs', () => {
  let root: string;
  let pool: Piscina;
  let n = 0;
  const out = () => path.join(root, `run-${n++}`);

  beforeAll(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'moe-report-edge-'));
    pool = createRenderPool({ maxThreads: 2 });
  });

  afterAll(async () => {
    await pool?.destroy();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('renders a run whose every ticker failed, saying there is nothing routed', async () => {
    const input: ReportInput = sampleReportInput({
      seed: 1,
      tickers: 0,
      failed: [
        { ticker: 'AAA', reason: 'FETCH_FAILED: HTTP 503 after 3 tries' },
        { ticker: 'B|B', reason: 'BAD_DATA: line 1\nline 2' },
      ],
    });
    const dir = out();
    const files = await renderReports(input, dir, { pool });
    expect(files).toHaveLength(6);
    for (const f of PNGS) await expectDrawnPng(path.join(dir, f), 1000);
    const md = await readFile(path.join(dir, REPORT_FILES.summaryMd), 'utf8');
    expect(md).toContain('No routed tickers in this run.');
    expect(md).toContain('| AAA | FETCH_FAILED: HTTP 503 after 3 tries |');
    // A pipe or line break in a reason must not break the table.
    expect(md).toContain('| B\\|B | BAD_DATA: line 1 line 2 |');
    expect(JSON.parse(await readFile(path.join(dir, REPORT_FILES.summaryJson), 'utf8')).tickers).toEqual([]);
  });

  it('renders a single ticker in-process (no pool) at the same sizes as through the pool', async () => {
    const input = sampleReportInput({ seed: 3, tickers: 1, days: 30 });
    const a = out();
    const b = out();
    await renderReports(input, a);
    await renderReports(input, b, { pool });
    for (const f of PNGS) {
      await expectDrawnPng(path.join(a, f), 1000);
      const [ma, mb] = await Promise.all([sharp(path.join(a, f)).metadata(), sharp(path.join(b, f)).metadata()]);
      expect([ma.width, ma.height]).toEqual([mb.width, mb.height]);
    }
  });

  it('renders 100 tickers over five classes including Unknown', async () => {
    const input = sampleReportInput({
      seed: 5,
      tickers: 100,
      days: 60,
      classes: ['Equities', 'Fixed Income', 'Commodities', 'Derivatives', undefined],
    });
    const dir = out();
    await renderReports(input, dir, { pool });
    for (const f of PNGS) await expectDrawnPng(path.join(dir, f), 2000);
    const perf = await sharp(path.join(dir, REPORT_FILES.performance)).metadata();
    expect(perf.width).toBe(2 * 1560);
    const md = await readFile(path.join(dir, REPORT_FILES.summaryMd), 'utf8');
    expect(md).toMatch(/\| Unknown \| 20 \|/);
  });

  it('rejects malformed input with a BAD_REPORT_INPUT error naming the field', async () => {
    const input = sampleReportInput({ seed: 9, tickers: 2, days: 5 });
    input.series[1]!.vol = new Float32Array(4);
    const err = await renderReports(input, out()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ReportError);
    expect((err as ReportError).code).toBe('BAD_REPORT_INPUT');
    expect((err as Error).message).toBe('Expected Float32Array of length 5 for series[1].vol but received Float32Array of length 4');
    await expect(renderReports(sampleReportInput({ seed: 9, tickers: 1 }), '')).rejects.toThrow(
      'Expected non-empty directory path for outDir but received ""',
    );
  });

  it('warms every thread of a pool with one sample set of the four figures each', async () => {
    const fresh = createRenderPool({ maxThreads: 2 });
    try {
      expect(fresh.options.minThreads).toBe(2);
      const ms = await warmRenderPool(fresh);
      expect(ms).toBeGreaterThan(0);
      expect(fresh.completed).toBe(8);
      expect(fresh.threads.length).toBe(2);
    } finally {
      await fresh.destroy();
    }
  });

  it('checks pool options and adds the tsx loader only when the parent lacks it', () => {
    expect(() => createRenderPool({ maxThreads: 0 })).toThrow(
      'Expected integer ≥ 1 for options.maxThreads but received 0 of type number',
    );
    const bare = workerExecArgv('/x/render-task.ts', []);
    expect(bare[0]).toBe('--import');
    expect(bare[1]).toMatch(/^file:.*tsx.*loader\.mjs$/);
    expect(workerExecArgv('/x/render-task.ts', ['--import', 'tsx'])).toEqual(['--import', 'tsx']);
    expect(workerExecArgv('/x/render-task.js', [])).toEqual([]);
  });
});
