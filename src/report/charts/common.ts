import type { Chart, ChartConfiguration, ChartType, Plugin } from 'chart.js';
import { FONT_FAMILY, GRID_COLOUR, PANEL_HEIGHT, PANEL_WIDTH, TEXT_COLOUR } from '../theme.js';

/** One chart of a figure, with its size in CSS pixels. */
export interface Panel {
  config: ChartConfiguration;
  width: number;
  height: number;
}

/** Chart.js configurations are invariant in their chart type; this is the one place the union is widened. */
export function panel<T extends ChartType>(config: ChartConfiguration<T>, width = PANEL_WIDTH, height = PANEL_HEIGHT): Panel {
  return { config: config as unknown as ChartConfiguration, width, height };
}

export const font = (size: number, weight: 'normal' | 'bold' = 'normal'): string => `${weight} ${size}px "${FONT_FAMILY}"`;

/** Panel title (chart.js title plugin options). */
export function panelTitle(text: string | string[]) {
  return { display: true, text, color: TEXT_COLOUR, font: { size: 15, weight: 'bold' as const }, padding: { top: 4, bottom: 10 } };
}

export function axisTitle(text: string) {
  return { display: true, text, color: TEXT_COLOUR, font: { size: 12 } };
}

export const grid = { color: GRID_COLOUR };

/** `YYYY-MM-DD` of a day number (days since 1970-01-01 UTC). */
export function isoDay(day: number): string {
  return new Date(Math.round(day) * 86_400_000).toISOString().slice(0, 10);
}

/** Writes `text` centred in the chart area; used for panels of runs with nothing to draw. */
export function centredMessage(id: string, text: string): Plugin {
  return {
    id,
    afterDraw(chart: Chart) {
      const { ctx, chartArea } = chart;
      ctx.save();
      ctx.fillStyle = '#555555';
      ctx.font = font(18, 'bold');
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillText(text, (chartArea.left + chartArea.right) / 2, (chartArea.top + chartArea.bottom) / 2);
      ctx.restore();
    },
  };
}

export const NO_TICKERS = 'No routed tickers in this run';

/** A framed panel that carries only a title and a message, so empty runs still produce a readable figure. */
export function messagePanel(title: string, message: string, width = PANEL_WIDTH, height = PANEL_HEIGHT): Panel {
  return panel<'bar'>(
    {
      type: 'bar',
      data: { labels: [], datasets: [] },
      options: {
        plugins: { title: panelTitle(title), legend: { display: false } },
        scales: {
          x: { display: true, grid: { display: false }, ticks: { display: false }, border: { color: GRID_COLOUR } },
          y: { display: true, grid: { display: false }, ticks: { display: false }, border: { color: GRID_COLOUR } },
        },
      },
      plugins: [centredMessage('emptyMessage', message)],
    },
    width,
    height,
  );
}

/** Draws labels with a white halo and skips any that would overlap one already drawn. */
export function drawLabels(
  chart: Chart,
  labels: { x: number; y: number; text: string; colour?: string }[],
  size = 11,
): void {
  const { ctx, chartArea } = chart;
  const boxes: { l: number; r: number; t: number; b: number }[] = [];
  ctx.save();
  ctx.font = font(size);
  ctx.textBaseline = 'middle';
  ctx.lineJoin = 'round';
  for (const lab of labels) {
    const w = ctx.measureText(lab.text).width;
    let left = lab.x + 7;
    if (left + w > chartArea.right) left = lab.x - 7 - w;
    const box = { l: left - 1, r: left + w + 1, t: lab.y - size / 2 - 1, b: lab.y + size / 2 + 1 };
    if (box.t < chartArea.top || box.b > chartArea.bottom) continue;
    if (boxes.some((o) => box.l < o.r && box.r > o.l && box.t < o.b && box.b > o.t)) continue;
    boxes.push(box);
    ctx.strokeStyle = 'rgba(255,255,255,0.9)';
    ctx.lineWidth = 3;
    ctx.strokeText(lab.text, left, lab.y);
    ctx.fillStyle = lab.colour ?? TEXT_COLOUR;
    ctx.fillText(lab.text, left, lab.y);
  }
  ctx.restore();
}
