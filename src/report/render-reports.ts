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

export interface RenderReportsOptions {
  /** Pool from `createRenderPool`; without one, figures render one after another on the calling thread. */
  pool?: Piscina;
}

async function render(fig: Figure, pool: Piscina | undefined): Promise<Uint8Array> {
  try {
    return pool ? ((await pool.run(fig)) as Uint8Array) : await renderFigure(fig);
  } catch (cause) {
    const why = cause instanceof Error ? cause.message : String(cause);
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
  const pngs = await Promise.all(figures.map((f) => render(f, opts.pool)));
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
