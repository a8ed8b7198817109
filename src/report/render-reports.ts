import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Piscina } from 'piscina';
import { ReportError } from './errors.js';
import { buildFigures } from './figure-data.js';
import type { Figure } from './figure-types.js';
import { renderFigure } from './render-figure.js';
import { summaryJson } from './summary-json.js';
import { buildSummaryMarkdown } from './summary-markdown.js';
import { REPORT_FILES, type ReportInput } from './types.js';
import { validateReportInput } from './validate.js';
import { errorText } from '../util/errors.js';

export interface RenderReportsOptions {
  /** Pool from `createRenderPool`; without one, figures render one after another on the calling thread. */
  pool?: Piscina;
}

export interface RenderFiguresOptions extends RenderReportsOptions {
  /**
   * Called once every figure is handed to the pool, before their PNGs are awaited: work for the calling thread
   * while the render threads draw (the report worker serialises `summary.json` there).
   */
  whileRendering?: () => void;
}

/**
 * Estimated render time of a figure: CPU ms of `renderFigure` after warm-up on the 2-core VM (best of four, 60 days
 * unless said): routing 155 at any size; performance 296–335 (it draws at most `PERFORMANCE_TICKERS_MAX` bars);
 * time series 239–247 at 60 dates, 266 at 250, 354 at 2,520; conditions 190 at 1,000 tickers, 360 at 10,000, 1,066 at
 * 50,000 (one marker per ticker). Only the order matters: from about 7,000 tickers the conditions figure is the
 * costliest, and a 2-thread pool that started it third (the order of 1,000 tickers) finished 10,000 tickers with one
 * thread drawing time series then conditions while the other idled after performance and routing.
 */
export function renderCost(fig: Figure): number {
  switch (fig.kind) {
    case 'routing':
      return 155;
    case 'performance':
      return 300;
    case 'timeSeries':
      return 240 + 0.045 * fig.dates.length;
    case 'conditions':
      return 185 + 0.0178 * fig.points.length;
  }
}

async function render(fig: Figure, pool: Piscina | undefined): Promise<Uint8Array> {
  try {
    return pool ? ((await pool.run(fig)) as Uint8Array) : await renderFigure(fig);
  } catch (cause) {
    const why = errorText(cause);
    throw new ReportError('RENDER_FAILED', `Rendering ${fig.file} failed: ${why}`, { cause });
  }
}

/**
 * Writes the four report PNGs into `outDir` (created if missing) and returns their paths in `REPORT_FILES` order;
 * `renderReports` adds the summaries.
 */
export async function renderFigures(input: ReportInput, outDir: string, opts: RenderFiguresOptions = {}): Promise<string[]> {
  validateReportInput(input, outDir);
  await mkdir(outDir, { recursive: true });
  const figures = buildFigures(input);
  // Costliest first, so the pool's threads finish together (longest-processing-time order): in submission order a
  // 2-thread pool gave one thread routing + time series and the other conditions + performance, and at 1,000 tickers
  // the threads spent 0.3 and 0.7 CPU-s (`bench:pipeline --threads`), the report waiting on the busier one.
  const cost = figures.map(renderCost);
  const order = figures.map((_, i) => i).sort((a, b) => cost[b]! - cost[a]!);
  const pngs: Uint8Array[] = new Array<Uint8Array>(figures.length);
  const rendering = Promise.all(order.map(async (i) => (pngs[i] = await render(figures[i]!, opts.pool))));
  try {
    opts.whileRendering?.();
  } finally {
    // Awaited even when the hook throws, so no render is left unobserved.
    await rendering;
  }
  const written: string[] = [];
  for (let i = 0; i < figures.length; i++) {
    const file = path.join(outDir, figures[i]!.file);
    await writeFile(file, pngs[i]!);
    written.push(file);
  }
  return written;
}

/**
 * Writes the four report PNGs, `summary.json` and `summary.md` into `outDir` (created if missing) and returns the
 * written paths in `REPORT_FILES` order. Runs with no routed tickers still get every file.
 */
export async function renderReports(input: ReportInput, outDir: string, opts: RenderReportsOptions = {}): Promise<string[]> {
  const written = await renderFigures(input, outDir, opts);
  const jsonPath = path.join(outDir, REPORT_FILES.summaryJson);
  await writeFile(jsonPath, summaryJson(input.summary));
  const mdPath = path.join(outDir, REPORT_FILES.summaryMd);
  await writeFile(mdPath, buildSummaryMarkdown(input.summary));
  return [...written, jsonPath, mdPath];
}
