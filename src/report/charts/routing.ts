import type { Chart, Plugin } from 'chart.js';
import type { RoutingFigure } from '../figure-types.js';
import { OKABE_ITO, TEXT_COLOUR, colourOf } from '../theme.js';
import { NO_TICKERS, axisTitle, font, grid, messagePanel, panel, panelTitle, type Panel } from './common.js';

/** White → Okabe–Ito blue; a single hue keeps the ordering readable without colour vision. */
function cellColour(t: number): string {
  const [r, g, b] = [0x00, 0x72, 0xb2];
  const mix = (c: number) => Math.round(255 + (c - 255) * (0.08 + 0.92 * t));
  return t <= 0 ? '#F7F7F7' : `rgb(${mix(r)},${mix(g)},${mix(b)})`;
}

function heatmapCells(fig: RoutingFigure): Plugin<'scatter'> {
  const max = Math.max(1, ...fig.counts.flat());
  return {
    id: 'heatmapCells',
    beforeDatasetsDraw(chart: Chart<'scatter'>) {
      const { ctx } = chart;
      const xs = chart.scales.x;
      const ys = chart.scales.y;
      if (!xs || !ys) return;
      const w = xs.width / fig.domains.length;
      const h = ys.height / fig.classes.length;
      ctx.save();
      fig.classes.forEach((cls, i) => {
        const rowTotal = (fig.counts[i] ?? []).reduce((a, b) => a + b, 0);
        fig.domains.forEach((dom, j) => {
          const count = fig.counts[i]?.[j] ?? 0;
          const cx = xs.getPixelForTick(j);
          const cy = ys.getPixelForTick(i);
          const t = count / max;
          ctx.fillStyle = cellColour(t);
          ctx.fillRect(cx - w / 2 + 1, cy - h / 2 + 1, w - 2, h - 2);
          if (cls === dom) {
            // Outline the cell where a class meets its own domain: the place correct routing lands.
            ctx.strokeStyle = OKABE_ITO.black;
            ctx.lineWidth = 2;
            ctx.strokeRect(cx - w / 2 + 2, cy - h / 2 + 2, w - 4, h - 4);
          }
          ctx.fillStyle = t > 0.55 ? '#FFFFFF' : TEXT_COLOUR;
          ctx.textAlign = 'center';
          ctx.textBaseline = 'middle';
          const fontSize = Math.max(10, Math.min(20, h / 3.2));
          ctx.font = font(fontSize, 'bold');
          ctx.fillText(String(count), cx, cy - (rowTotal > 0 ? fontSize * 0.45 : 0));
          if (rowTotal > 0) {
            ctx.font = font(Math.max(9, fontSize * 0.6));
            ctx.fillText(`${Math.round((100 * count) / rowTotal)} %`, cx, cy + fontSize * 0.6);
          }
        });
      });
      ctx.restore();
    },
  };
}

export function routingHeatmap(fig: RoutingFigure): Panel {
  const title = 'Tickers per asset class and chosen domain';
  if (fig.classes.length === 0) return messagePanel(title, NO_TICKERS);
  return panel<'scatter'>({
    type: 'scatter',
    data: {
      datasets: [
        {
          data: fig.classes.flatMap((c) => fig.domains.map((d) => ({ x: d, y: c }) as unknown as { x: number; y: number })),
          pointRadius: 0,
        },
      ],
    },
    options: {
      plugins: {
        title: panelTitle(title),
        subtitle: {
          display: true,
          text: 'cell: tickers (share of row); outlined: class routed to its own domain',
          color: '#555555',
          font: { size: 11 },
          padding: { bottom: 8 },
        },
        legend: { display: false },
        tooltip: { enabled: false },
      },
      scales: {
        x: { type: 'category', labels: fig.domains, offset: true, grid: { display: false }, title: axisTitle('Chosen domain'), ticks: { font: { size: 12 } } },
        y: { type: 'category', labels: fig.classes, offset: true, grid: { display: false }, title: axisTitle('Asset class'), ticks: { font: { size: 12 } } },
      },
    },
    plugins: [heatmapCells(fig)],
  });
}

function valueLabels(totals: number[]): Plugin<'bar'> {
  const sum = totals.reduce((a, b) => a + b, 0);
  return {
    id: 'valueLabels',
    afterDatasetsDraw(chart: Chart<'bar'>) {
      const meta = chart.getDatasetMeta(0);
      const { ctx } = chart;
      ctx.save();
      ctx.font = font(12, 'bold');
      ctx.fillStyle = TEXT_COLOUR;
      ctx.textAlign = 'center';
      ctx.textBaseline = 'bottom';
      meta.data.forEach((bar, i) => {
        const v = totals[i] ?? 0;
        const share = sum > 0 ? Math.round((100 * v) / sum) : 0;
        ctx.fillText(`${v} (${share} %)`, bar.x, bar.y - 4);
      });
      ctx.restore();
    },
  };
}

export function domainPopularity(fig: RoutingFigure): Panel {
  const title = 'Overall domain popularity';
  const totals = fig.domains.map((_, j) => fig.counts.reduce((a, row) => a + (row[j] ?? 0), 0));
  if (totals.every((t) => t === 0)) return messagePanel(title, NO_TICKERS, 520);
  const max = Math.max(...totals);
  return panel<'bar'>(
    {
      type: 'bar',
      data: {
        labels: fig.domains,
        datasets: [{ data: totals, backgroundColor: fig.domains.map(colourOf), maxBarThickness: 80 }],
      },
      options: {
        plugins: { title: panelTitle(title), legend: { display: false }, tooltip: { enabled: false } },
        scales: {
          x: { grid: { display: false }, ticks: { font: { size: 12 } } },
          // Head-room above the tallest bar for its value label.
          y: { beginAtZero: true, suggestedMax: max * 1.15, grid, title: axisTitle('Tickers routed'), ticks: { precision: 0 } },
        },
      },
      plugins: [valueLabels(totals)],
    },
    520,
  );
}

export function routingPanels(fig: RoutingFigure): Panel[] {
  return [routingHeatmap(fig), domainPopularity(fig)];
}
