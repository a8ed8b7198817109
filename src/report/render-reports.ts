import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Piscina } from 'piscina';
import { ReportError } from './errors.js';
import { buildFigures } from './figure-data.js';
import type { Figure } from './figure-types.js';
import { renderFigure } from './render-figure.js';
import { buildSummaryMarkdown } from './summary-markdown.js';
import { REPORT_FILES, type ReportInput } from './types.js';
import { validateReportInput } from './validate.js';
import { errorText } from '../util/errors.js';

export interface RenderReportsOptions {
  /** Pool from `createRenderPool`; without one, figures render one after another on the calling thread. */
  pool?: Piscina;
}

/**
 * Relative render cost per figure kind (CPU ms of one 1,000-ticker × 60-day figure on the 2-core VM, best of ten:
 * `renderFigure` after warm-up). Only the order matters.
 */
const RENDER_COST: Record<Figure['kind'], number> = { performance: 280, timeSeries: 140, conditions: 120, routing: 65 };

async function render(fig: Figure, pool: Piscina | undefined): Promise<Uint8Array> {
  try {
    return pool ? ((await pool.run(fig)) as Uint8Array) : await renderFigure(fig);
  } catch (cause) {
    const why = errorText(cause);
    throw new ReportError('RENDER_FAILED', `Rendering ${fig.file} failed: ${why}`, { cause });
  }
}

/**
 * Writes the four report PNGs, `summary.json` and `summary.md` into `outDir` (created if missing) and returns the
 * written paths in `REPORT_FILES` order. Runs with no routed tickers still get every file.
 */
export async function renderReports(input: ReportInput, outDir: string, opts: RenderReportsOptions = {}): Promise<string[]> {
  validateReportInput(input, outDir);
  await mkdir(outDir, { recursive: true });
  const figures = buildFigures(input);
  // Costliest first, so the pool's threads finish together (longest-processing-time order): in submission order a
  // 2-thread pool gave one thread routing + time series and the other conditions + performance, and at 1,000 tickers
  // the threads spent 0.3 and 0.7 CPU-s (`bench:pipeline --threads`), the report waiting on the busier one.
  const order = figures.map((_, i) => i).sort((a, b) => RENDER_COST[figures[b]!.kind] - RENDER_COST[figures[a]!.kind]);
  const pngs: Uint8Array[] = new Array<Uint8Array>(figures.length);
  await Promise.all(order.map(async (i) => (pngs[i] = await render(figures[i]!, opts.pool))));
  const written: string[] = [];
  for (let i = 0; i < figures.length; i++) {
    const file = path.join(outDir, figures[i]!.file);
    await writeFile(file, pngs[i]!);
    written.push(file);
  }
  const jsonPath = path.join(outDir, REPORT_FILES.summaryJson);
  await writeFile(jsonPath, `${JSON.stringify(input.summary, null, 2)}\n`);
  const mdPath = path.join(outDir, REPORT_FILES.summaryMd);
  await writeFile(mdPath, buildSummaryMarkdown(input.summary));
  return [...written, jsonPath, mdPath];
}
