import type { Chart, Plugin } from 'chart.js';
import type { TimeSeriesFigure } from '../figure-types.js';
import { OKABE_ITO, colourOf, withAlpha } from '../theme.js';
import { NO_TICKERS, axisTitle, font, grid, isoDay, messagePanel, panel, panelTitle, type Panel } from './common.js';

const dateAxis = (title: string, dates: number[]) => ({
  type: 'linear' as const,
  // Pinned to the data so the axis does not round out to empty weeks on either side.
  min: dates[0] ?? 0,
  max: Math.max((dates[0] ?? 0) + 1, dates[dates.length - 1] ?? 0),
  grid,
  title: axisTitle(title),
  ticks: { maxTicksLimit: 7, maxRotation: 0, callback: (v: string | number) => isoDay(Number(v)) },
});

function regimeBands(bands: { low: number; high: number }): Plugin<'line'> {
  const zones = [
    { from: 0, to: bands.low, colour: withAlpha(OKABE_ITO.green, 0.1), text: `low < ${bands.low} %` },
    { from: bands.low, to: bands.high, colour: withAlpha(OKABE_ITO.yellow, 0.14), text: 'normal' },
    { from: bands.high, to: Infinity, colour: withAlpha(OKABE_ITO.vermillion, 0.1), text: `high ≥ ${bands.high} %` },
  ];
  const visible = (chart: Chart<'line'>) => {
    const y = chart.scales.y;
    const { chartArea } = chart;
    if (!y) return [];
    return zones
      .map((z) => ({
        ...z,
        top: Math.max(chartArea.top, y.getPixelForValue(Math.min(z.to, y.max))),
        bottom: Math.min(chartArea.bottom, y.getPixelForValue(Math.max(z.from, y.min))),
      }))
      .filter((z) => z.bottom - z.top >= 1);
  };
  return {
    id: 'regimeBands',
    beforeDatasetsDraw(chart: Chart<'line'>) {
      const { ctx, chartArea } = chart;
      ctx.save();
      for (const z of visible(chart)) {
        ctx.fillStyle = z.colour;
        ctx.fillRect(chartArea.left, z.top, chartArea.right - chartArea.left, z.bottom - z.top);
      }
      ctx.restore();
    },
    // Labels go on top of the lines, with a halo, so a line crossing a band's corner does not hide its name.
    afterDatasetsDraw(chart: Chart<'line'>) {
      const { ctx, chartArea } = chart;
      ctx.save();
      ctx.font = font(10);
      ctx.textAlign = 'left';
      ctx.textBaseline = 'top';
      ctx.lineJoin = 'round';
      for (const z of visible(chart).filter((v) => v.bottom - v.top >= 14)) {
        ctx.strokeStyle = 'rgba(255,255,255,0.85)';
        ctx.lineWidth = 3;
        ctx.strokeText(z.text, chartArea.left + 6, z.top + 3);
        ctx.fillStyle = '#555555';
        ctx.fillText(z.text, chartArea.left + 6, z.top + 3);
      }
      ctx.restore();
    },
  };
}

export function volatilityRegimes(fig: TimeSeriesFigure): Panel {
  const title = 'Mean volatility per asset class, with regime bands';
  if (fig.dates.length === 0) return messagePanel(title, NO_TICKERS, 900);
  const maxVol = Math.max(0, ...fig.classes.flatMap((c) => c.vol.filter((v): v is number => v !== null)));
  const few = fig.dates.length <= 2;
  const classSets = fig.classes.map((c) => ({
    label: c.name,
    data: fig.dates.flatMap((d, j) => (c.vol[j] === null || c.vol[j] === undefined ? [] : [{ x: d, y: c.vol[j] as number }])),
    borderColor: colourOf(c.name),
    backgroundColor: colourOf(c.name),
    borderWidth: 2,
    pointRadius: few ? 4 : 0,
    tension: 0.15,
    yAxisID: 'y',
  }));
  const confSet = {
    label: 'Router mean confidence (right axis)',
    data: fig.dates.flatMap((d, j) => (fig.confidence[j] == null ? [] : [{ x: d, y: fig.confidence[j] as number }])),
    borderColor: OKABE_ITO.black,
    backgroundColor: OKABE_ITO.black,
    borderWidth: 1.5,
    borderDash: [6, 4],
    pointRadius: few ? 4 : 0,
    tension: 0.15,
    yAxisID: 'y2',
  };
  return panel<'line'>(
    {
      type: 'line',
      data: { datasets: [...classSets, confSet] },
      options: {
        plugins: {
          title: panelTitle(title),
          legend: { position: 'bottom', labels: { boxWidth: 18, boxHeight: 2, font: { size: 11 } } },
          tooltip: { enabled: false },
        },
        scales: {
          x: dateAxis('Date', fig.dates),
          y: {
            type: 'linear',
            min: 0,
            suggestedMax: Math.max(fig.bands.high * 1.25, maxVol * 1.05),
            grid,
            title: axisTitle('Annualised volatility (%)'),
          },
          y2: {
            type: 'linear',
            position: 'right',
            min: 0,
            max: 1,
            grid: { display: false },
            title: axisTitle('Mean confidence'),
          },
        },
      },
      plugins: [regimeBands(fig.bands)],
    },
    900,
  );
}

export function routingMix(fig: TimeSeriesFigure): Panel {
  const title = 'Daily routing mix';
  if (fig.dates.length === 0) return messagePanel(title, NO_TICKERS, 560);
  return panel<'line'>(
    {
      type: 'line',
      data: {
        datasets: fig.domains.map((d, i) => ({
          label: d,
          data: fig.dates.map((x, j) => ({ x, y: (fig.domainShare[i]?.[j] ?? 0) * 100 })),
          borderColor: colourOf(d),
          backgroundColor: withAlpha(colourOf(d), 0.7),
          borderWidth: 1,
          pointRadius: 0,
          fill: i === 0 ? 'origin' : '-1',
        })),
      },
      options: {
        plugins: {
          title: panelTitle(title),
          legend: { position: 'bottom', labels: { boxWidth: 14, font: { size: 11 } } },
          tooltip: { enabled: false },
        },
        scales: {
          x: dateAxis('Date', fig.dates),
          y: { type: 'linear', stacked: true, min: 0, max: 100, grid, title: axisTitle('Share of tickers routed (%)') },
        },
      },
    },
    560,
  );
}

export function timeSeriesPanels(fig: TimeSeriesFigure): Panel[] {
  return [volatilityRegimes(fig), routingMix(fig)];
}
