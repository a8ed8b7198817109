import { createCanvas } from 'canvas';
import type { Chart, LabelItem, Plugin } from 'chart.js';
import { describe, expect, it } from 'vitest';
import { renderPanel } from '../src/report/canvas.js';
import { drawLabels } from '../src/report/charts/common.js';
import { SCATTER_DOTS_FROM, conditionsPanels } from '../src/report/charts/conditions.js';
import { performancePanels } from '../src/report/charts/performance.js';
import { PERFORMANCE_TICKERS_MAX, conditionsFigure, performanceFigure } from '../src/report/figure-data.js';
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

describe('performance panels of a run with more tickers than they draw', () => {
  const titleOf = (p: ReturnType<typeof performancePanels>[number]) => (p.config.options?.plugins?.title as { text?: unknown } | undefined)?.text;

  it('draw the 50 highest and 50 lowest returns and say how many more there are', () => {
    const summary = sampleReportInput({ seed: 33, tickers: 1000, days: 5 }).summary;
    const fig = performanceFigure(summary);
    expect(PERFORMANCE_TICKERS_MAX).toBe(100);
    expect(fig.total).toBe(1000);
    expect(fig.tickers).toHaveLength(100);
    const all = summary.tickers.map((t) => t.totalReturn * 100).sort((a, b) => b - a);
    expect(fig.tickers.map((t) => t.ret).sort((a, b) => b - a)).toEqual([...all.slice(0, 50), ...all.slice(-50)]);
    // Still grouped by chosen domain, as the full panels are.
    const domains = fig.tickers.map((t) => t.domain);
    expect(domains).toEqual([...domains].sort((a, b) => a - b));
    for (const p of performancePanels(fig)) {
      const text = titleOf(p) as string[];
      expect(text).toHaveLength(2);
      expect(text[1]).toBe('100 of 1,000 tickers: the 50 highest and 50 lowest returns, and 900 more (summary.json)');
      renderPanel(p);
    }
  });

  it('draw every ticker, with a one-line title, up to 100 tickers', () => {
    const fig = performanceFigure(sampleReportInput({ seed: 33, tickers: 100, days: 5 }).summary);
    expect(fig.tickers).toHaveLength(100);
    expect(fig.total).toBe(100);
    for (const p of performancePanels(fig)) expect(typeof titleOf(p)).toBe('string');
  });
});

describe('the return-volatility scatter of a large run', () => {
  it('draws small rimless dots from 2,000 tickers and says so, markers below', () => {
    expect(SCATTER_DOTS_FROM).toBe(2000);
    const style = (n: number) => {
      const [scatter] = conditionsPanels(conditionsFigure(sampleReportInput({ seed: 34, tickers: n, days: 5 }).summary));
      const sets = scatter!.config.data.datasets as { pointRadius?: number; borderWidth?: number; data: unknown[] }[];
      const subtitle = (scatter!.config.options?.plugins as { subtitle?: { text?: string } }).subtitle?.text;
      return { radius: sets.find((d) => d.data.length > 0)!.pointRadius, border: sets.find((d) => d.data.length > 0)!.borderWidth, subtitle };
    };
    expect(style(2000)).toEqual({ radius: 1.5, border: 0, subtitle: 'colour: asset class · 2,000 tickers as dots' });
    expect(style(1999)).toEqual({ radius: 5, border: 1, subtitle: 'colour: asset class · shape: chosen domain' });
  });
});
