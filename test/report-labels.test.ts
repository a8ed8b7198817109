import { createCanvas } from 'canvas';
import type { Chart, LabelItem, Plugin } from 'chart.js';
import { describe, expect, it } from 'vitest';
import { renderPanel } from '../src/report/canvas.js';
import { drawLabels } from '../src/report/charts/common.js';
import { conditionsPanels } from '../src/report/charts/conditions.js';
import { performancePanels } from '../src/report/charts/performance.js';
import { conditionsFigure, performanceFigure } from '../src/report/figure-data.js';
import { sampleReportInput } from '../src/report/sample-input.js';
import { Rng } from '../src/util/random.js';

interface Box {
  l: number;
  r: number;
  t: number;
  b: number;
}
const overlaps = (a: Box, b: Box) => a.l < b.r && a.r > b.l && a.t < b.b && a.b > b.t;

const input = sampleReportInput({ seed: 31, tickers: 100, days: 40, classes: ['Equities', 'Fixed Income', 'Commodities', 'Derivatives', undefined] });

describe('labels stay apart with 100 tickers', () => {
  it('drawLabels skips every label that would overlap one already drawn', () => {
    const canvas = createCanvas(600, 400);
    const ctx = canvas.getContext('2d');
    const drawn: Box[] = [];
    const fill = ctx.fillText.bind(ctx);
    // Record the box of every label actually written, measured by the same canvas.
    ctx.fillText = (text: string, x: number, y: number) => {
      const w = ctx.measureText(text).width;
      drawn.push({ l: x, r: x + w, t: y - 5.5, b: y + 5.5 });
      fill(text, x, y);
    };
    const rng = new Rng(4);
    // 100 labels crowded into a third of the area: many must be dropped.
    const labels = Array.from({ length: 100 }, (_, i) => ({ x: 50 + rng.uniform(0, 200), y: 30 + rng.uniform(0, 120), text: `TICK${i}` }));
    const chart = { ctx, chartArea: { left: 0, right: 600, top: 0, bottom: 400 } } as unknown as Chart;
    drawLabels(chart, labels, 11);
    expect(drawn.length).toBeGreaterThan(5);
    expect(drawn.length).toBeLessThan(100);
    for (let i = 0; i < drawn.length; i++) for (let j = i + 1; j < drawn.length; j++) expect(overlaps(drawn[i]!, drawn[j]!)).toBe(false);
  });

  it('the scatter names at most ten extreme tickers beyond 20', () => {
    const fig = conditionsFigure(input.summary);
    const [scatter] = conditionsPanels(fig);
    const names: string[] = [];
    const ctxPlugin: Plugin = {
      id: 'spy',
      beforeDatasetsDraw(chart) {
        const fill = chart.ctx.fillText.bind(chart.ctx);
        chart.ctx.fillText = (t: string, x: number, y: number, w?: number) => {
          if (/^[A-Z]{2}\d{3}$/.test(t)) names.push(t);
          fill(t, x, y, w);
        };
      },
    };
    scatter!.config.plugins = [...(scatter!.config.plugins ?? []), ctxPlugin];
    renderPanel(scatter!);
    expect(names.length).toBeGreaterThan(0);
    expect(names.length).toBeLessThanOrEqual(10);
  });

  it.each([100, 1000])('ticker axis labels of the performance panels are at least one line apart (%i tickers)', (n) => {
    const fig = performanceFigure(n === 100 ? input.summary : sampleReportInput({ seed: 32, tickers: n, days: 5 }).summary);
    for (const p of performancePanels(fig)) {
      let items: LabelItem[] = [];
      const capture: Plugin = { id: 'capture', afterDraw: (chart) => void (items = chart.scales.x!.getLabelItems()) };
      p.config.plugins = [...(p.config.plugins ?? []), capture];
      renderPanel(p);
      // Labels are rotated 90°, so neighbours clash when their x positions are closer than the font's size.
      const xs = items.map((it) => it.options.translation![0]).sort((a, b) => a - b);
      const size = (items[0]!.font as { size: number }).size;
      expect(xs.length).toBeGreaterThan(20);
      for (let i = 1; i < xs.length; i++) expect(xs[i]! - xs[i - 1]!).toBeGreaterThanOrEqual(size);
    }
  });
});
