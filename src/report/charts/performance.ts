import type { ScriptableScaleContext } from 'chart.js';
import type { PerformanceFigure } from '../figure-types.js';
import { GRID_COLOUR, colourOf } from '../theme.js';
import { NO_TICKERS, axisTitle, grid, messagePanel, panel, panelTitle, type Panel } from './common.js';

const HEIGHT = 420;

/** Wide enough for ~12 px per bar at 100 tickers; the tick labels thin themselves out past that. */
function widthFor(n: number): number {
  return Math.min(1600, Math.max(1000, 260 + 13 * n));
}

function tickerAxis(fig: PerformanceFigure) {
  const n = fig.tickers.length;
  return {
    stacked: true,
    grid: { display: false },
    ticks: {
      autoSkip: true,
      autoSkipPadding: 2,
      minRotation: n > 16 ? 90 : 0,
      maxRotation: 90,
      font: { size: n > 40 ? 9 : 11 },
      // Tick labels carry the asset class as colour, bars the chosen domain: a mismatch shows as two colours.
      color: (c: ScriptableScaleContext) => colourOf(fig.tickers[Number(c.tick?.value)]?.cls ?? ''),
    },
  };
}

/**
 * The panel's title, and for a run with more tickers than the panels draw a second line saying which ones are shown
 * and how many are left out, so a top-and-bottom selection is never read as the whole run.
 */
function titleLines(fig: PerformanceFigure, title: string): string | string[] {
  const shown = fig.tickers.length;
  if (fig.total <= shown) return title;
  const n = (v: number) => v.toLocaleString('en-US');
  const half = Math.floor(shown / 2);
  return [title, `${n(shown)} of ${n(fig.total)} tickers: the ${half} highest and ${shown - half} lowest returns, and ${n(fig.total - shown)} more (summary.json)`];
}

/** Title, a compact domain legend on top and no tooltips (static images): shared by both performance panels. */
function domainLegendPlugins(title: string | string[]) {
  return {
    title: panelTitle(title),
    legend: { position: 'top' as const, labels: { boxWidth: 14, font: { size: 11 } } },
    tooltip: { enabled: false },
  };
}

export function returnsByDomain(fig: PerformanceFigure): Panel {
  const title = 'Total log return per ticker, bar colour = preferred domain, label colour = asset class';
  const width = widthFor(fig.tickers.length);
  if (fig.tickers.length === 0) return messagePanel('Total log return per ticker', NO_TICKERS, width, HEIGHT);
  const used = fig.domains.map((_, d) => fig.tickers.some((t) => t.domain === d));
  return panel<'bar'>(
    {
      type: 'bar',
      data: {
        labels: fig.tickers.map((t) => t.ticker),
        datasets: fig.domains
          .map((d, i) => ({
            label: d,
            data: fig.tickers.map((t) => (t.domain === i ? t.ret : null)),
            backgroundColor: colourOf(d),
            maxBarThickness: 36,
          }))
          .filter((_, i) => used[i]),
      },
      options: {
        plugins: domainLegendPlugins(titleLines(fig, title)),
        scales: {
          x: tickerAxis(fig),
          y: {
            stacked: true,
            grace: '5%',
            grid: { ...grid, color: (c: ScriptableScaleContext) => (c.tick?.value === 0 ? '#8C8C8C' : GRID_COLOUR) },
            title: axisTitle('Total log return (%)'),
          },
        },
      },
    },
    width,
    HEIGHT,
  );
}

export function domainProbabilities(fig: PerformanceFigure): Panel {
  const title = 'Mean routing probability per domain';
  const width = widthFor(fig.tickers.length);
  if (fig.tickers.length === 0) return messagePanel(title, NO_TICKERS, width, HEIGHT);
  return panel<'bar'>(
    {
      type: 'bar',
      data: {
        labels: fig.tickers.map((t) => t.ticker),
        datasets: fig.domains.map((d, i) => ({
          label: d,
          data: fig.tickers.map((t) => t.probs[i] ?? 0),
          backgroundColor: colourOf(d),
          maxBarThickness: 36,
        })),
      },
      options: {
        plugins: domainLegendPlugins(titleLines(fig, title)),
        scales: {
          x: tickerAxis(fig),
          y: { stacked: true, min: 0, max: 1, grid, title: axisTitle('Probability') },
        },
      },
    },
    width,
    HEIGHT,
  );
}

export function performancePanels(fig: PerformanceFigure): Panel[] {
  return [returnsByDomain(fig), domainProbabilities(fig)];
}
