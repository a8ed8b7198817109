import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Piscina } from 'piscina';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOMAINS } from '../src/domains.js';
import { createRenderPool } from '../src/report/pool.js';
import { renderFigures, renderReports } from '../src/report/render-reports.js';
import { sampleReportInput } from '../src/report/sample-input.js';
import { DOMAIN_COLOURS } from '../src/report/theme.js';
import { REPORT_FILES, type ReportInput, type RunSummary } from '../src/report/types.js';

/** Figure geometry in device pixels: a 128-px title strip, then panels at devicePixelRatio 2. */
const TITLE = 128;
const PANELS: Record<string, { w: number; h: number }[]> = {
  [REPORT_FILES.routing]: [
    { w: 1440, h: 1040 },
    { w: 1040, h: 1040 },
  ],
  [REPORT_FILES.conditions]: [
    { w: 1440, h: 1040 },
    { w: 1200, h: 1040 },
  ],
  [REPORT_FILES.timeSeries]: [
    { w: 1800, h: 1040 },
    { w: 1120, h: 1040 },
    { w: 1200, h: 1040 },
  ],
};

async function decode(file: string) {
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

/** Share of pixels in a rectangle that are clearly not white background. */
function inkShare(img: { data: Buffer; width: number }, x0: number, y0: number, w: number, h: number): number {
  let ink = 0;
  for (let y = y0; y < y0 + h; y++) {
    for (let x = x0; x < x0 + w; x++) {
      const i = (y * img.width + x) * 3;
      if (Math.min(img.data[i]!, img.data[i + 1]!, img.data[i + 2]!) < 200) ink++;
    }
  }
  return ink / (w * h);
}

/** Smallest summed channel distance between `hex` and any pixel: 0 when the exact colour is present. */
function nearest(img: { data: Buffer }, hex: string): number {
  const c = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  let best = Infinity;
  for (let i = 0; i < img.data.length; i += 3) {
    const d = Math.abs(img.data[i]! - c[0]!) + Math.abs(img.data[i + 1]! - c[1]!) + Math.abs(img.data[i + 2]! - c[2]!);
    if (d < best) best = d;
  }
  return best;
}

describe('renderReports through the render pool (12 tickers, 3 classes, 60 days, 1 failure)', () => {
  let dir: string;
  let pool: Piscina;
  let input: ReportInput;
  let files: string[];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'moe-report-'));
    pool = createRenderPool({ maxThreads: 2 });
    input = sampleReportInput({
      seed: 42,
      tickers: 12,
      days: 60,
      failed: [{ ticker: 'BADX', reason: 'UNKNOWN_TICKER: Expected a listed symbol for BADX but received no quote' }],
    });
    files = await renderReports(input, dir, { pool });
  });

  afterAll(async () => {
    await pool?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('returns the six written paths in REPORT_FILES order', () => {
    expect(files).toEqual(Object.values(REPORT_FILES).map((f) => path.join(dir, f)));
  });

  it('rendered the four figures on the pool threads', () => {
    expect(pool.completed).toBe(4);
    expect(pool.threads.length).toBeGreaterThanOrEqual(1);
  });

  it.each(Object.keys(PANELS))('%s has the expected size and ink in every panel', async (name) => {
    const img = await decode(path.join(dir, name));
    const panels = PANELS[name]!;
    expect(img.width).toBe(panels.reduce((a, p) => a + p.w, 0));
    expect(img.height).toBe(TITLE + Math.max(...panels.map((p) => p.h)));
    const stats = await sharp(path.join(dir, name)).stats();
    expect(Math.max(...stats.channels.slice(0, 3).map((c) => c.stdev))).toBeGreaterThan(20);
    expect(inkShare(img, 0, 0, img.width, TITLE)).toBeGreaterThan(0.01);
    let left = 0;
    for (const p of panels) {
      expect(inkShare(img, left, TITLE, p.w, p.h)).toBeGreaterThan(0.02);
      left += p.w;
    }
  });

  it('renderFigures writes the same four PNGs alone, running the caller\'s work once while the threads draw', async () => {
    const alone = await mkdtemp(path.join(os.tmpdir(), 'moe-figures-'));
    try {
      const seen: number[] = [];
      const before = pool.completed;
      const pngs = await renderFigures(input, alone, { pool, whileRendering: () => void seen.push(pool.completed - before) });
      // Called once, before any of the four figures came back.
      expect(seen).toEqual([0]);
      expect(pool.completed - before).toBe(4);
      expect(pngs).toEqual(Object.values(REPORT_FILES).filter((f) => f.endsWith('.png')).map((f) => path.join(alone, f)));
      expect(await readdir(alone)).toHaveLength(4);
      for (const f of pngs) expect((await readFile(f)).equals(await readFile(path.join(dir, path.basename(f))))).toBe(true);
      // A failing hook fails the call, once the renders it started are done.
      await expect(renderFigures(input, alone, { pool, whileRendering: () => { throw new Error('hook'); } })).rejects.toThrow('hook');
      expect(pool.completed - before).toBe(8);
    } finally {
      await rm(alone, { recursive: true, force: true });
    }
  });

  it('stacks the two performance panels under one another, 1000 CSS px wide for 12 tickers', async () => {
    const img = await decode(path.join(dir, REPORT_FILES.performance));
    expect(img.width).toBe(2000);
    expect(img.height).toBe(TITLE + 2 * 840);
    expect(inkShare(img, 0, TITLE, 2000, 840)).toBeGreaterThan(0.02);
    expect(inkShare(img, 0, TITLE + 840, 2000, 840)).toBeGreaterThan(0.02);
  });

  it('keeps the domain colours through palette compression', async () => {
    const img = await decode(path.join(dir, REPORT_FILES.routing));
    // The popularity panel draws one bar in its domain's colour for every domain that received a ticker.
    const chosen = new Set(input.summary.tickers.map((t) => t.domain));
    expect(chosen.size).toBeGreaterThan(1);
    for (const d of chosen) expect(nearest(img, DOMAIN_COLOURS[d]!), d).toBeLessThanOrEqual(12);
    for (const f of files.filter((f) => f.endsWith('.png'))) {
      expect((await readFile(f)).length).toBeLessThan(400_000);
    }
  });

  it('writes summary.json as the RunSummary, pretty-printed', async () => {
    const text = await readFile(path.join(dir, REPORT_FILES.summaryJson), 'utf8');
    expect(text).toContain('\n  "runId"');
    const parsed = JSON.parse(text) as RunSummary;
    expect(parsed).toEqual(JSON.parse(JSON.stringify(input.summary)));
    expect(Object.keys(parsed).sort()).toEqual(
      ['backend', 'createdAt', 'drift', 'failed', 'finishedAt', 'model', 'routing', 'runId', 'source', 'tickers', 'timings', 'tokens', 'universe'].sort(),
    );
    expect(parsed.tickers).toHaveLength(12);
    for (const t of parsed.tickers) {
      expect(t.probs).toHaveLength(4);
      expect(t.domainDays.reduce((a, b) => a + b, 0)).toBe(t.days);
      expect(DOMAINS).toContain(t.domain);
    }
  });

  it('writes summary.md naming each class, its condition, and the failed ticker with its reason', async () => {
    const md = await readFile(path.join(dir, REPORT_FILES.summaryMd), 'utf8');
    for (const c of ['Equities', 'Fixed Income', 'Commodities']) expect(md).toMatch(new RegExp(`\\| ${c} \\| 4 \\|`));
    expect(md).toMatch(/\| (crisis|high volatility|bull|bear|sideways) \|/);
    expect(md).toContain('| BADX | UNKNOWN_TICKER: Expected a listed symbol for BADX but received no quote |');
    expect(md).toContain('`scalar`');
  });
});
