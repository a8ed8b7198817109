import type { Chart, LegendItem, Plugin, Scale } from 'chart.js';
import type { TimeSeriesFigure } from '../figure-types.js';
import { OKABE_ITO, TEXT_COLOUR, colourOf, withAlpha } from '../theme.js';
import { NO_TICKERS, axisTitle, font, grid, isoDay, messagePanel, panel, panelTitle, type Panel } from './common.js';

const dateAxis = (title: string, dates: number[]) => ({
  type: 'linear' as const,
  // Pinned to the data so the axis does not round out to empty weeks on either side.
  min: dates[0] ?? 0,
  max: Math.max((dates[0] ?? 0) + 1, dates[dates.length - 1] ?? 0),
  grid,
  title: axisTitle(title),
  ticks: { maxTicksLimit: 7, maxRotation: 0, callback: (v: string | number) => isoDay(Number(v)) },
  // The pinned minimum and maximum are always ticks; when one falls just beside a regular tick their dates
  // overlap, so the regular one goes. The regular step is the widest gap (the pinned ends make narrower ones).
  afterBuildTicks: (axis: Scale) => {
    const t = axis.ticks;
    if (t.length < 4) return;
    let step = 0;
    for (let i = 1; i < t.length; i++) step = Math.max(step, t[i]!.value - t[i - 1]!.value);
    if (t[t.length - 1]!.value - t[t.length - 2]!.value < 0.6 * step) t.splice(t.length - 2, 1);
    if (t.length >= 3 && t[1]!.value - t[0]!.value < 0.6 * step) t.splice(1, 1);
  },
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

/** Changed tickers listed in the drift panel before "+ N more" (the full list is in summary.md). */
const CHANGED_SHOWN = 6;

function changedLines(changed: { ticker: string; from: string; to: string }[]): string[] {
  if (changed.length === 0) return [];
  const shown = changed.slice(0, CHANGED_SHOWN).map((c) => `${c.ticker} ${c.from} → ${c.to}`);
  const more = changed.length - shown.length;
  const lines: string[] = [];
  for (let i = 0; i < shown.length; i += 2) lines.push(shown.slice(i, i + 2).join(' · '));
  if (more > 0) lines.push(`+ ${more} more (see summary.md)`);
  return lines;
}

/** Percent labels above each bar, so the mix reads without the axis. */
function shareLabels(): Plugin<'bar'> {
  return {
    id: 'shareLabels',
    afterDatasetsDraw(chart: Chart<'bar'>) {
      const { ctx } = chart;
      ctx.save();
      ctx.font = font(10);
      ctx.fillStyle = TEXT_COLOUR;
      ctx.textAlign = 'center';
      ctx.textBaseline = 'bottom';
      chart.data.datasets.forEach((ds, k) => {
        chart.getDatasetMeta(k).data.forEach((bar, i) => {
          const v = Number(ds.data[i] ?? 0);
          ctx.fillText(`${Math.round(v)} %`, bar.x, bar.y - 3);
        });
      });
      ctx.restore();
    },
  };
}

/**
 * Domain mix of this run beside the previous run of the same universe, with the population stability index and
 * the tickers that changed domain. For a universe's first run it shows the mix alone and says there is nothing
 * to compare with.
 */
export function routingDrift(fig: TimeSeriesFigure): Panel {
  const title = 'Routing drift against the previous run';
  const width = 600;
  const { drift } = fig;
  if (drift.routed === 0) return messagePanel(title, NO_TICKERS, width);
  const prev = drift.previous;
  const conf = `mean confidence ${drift.meanConfidence.toFixed(3)}`;
  const subtitle = prev
    ? [
        `PSI ${prev.psi.toFixed(3)} (${prev.level}) · ${conf} (${prev.meanConfidence <= drift.meanConfidence ? '+' : '−'}${Math.abs(drift.meanConfidence - prev.meanConfidence).toFixed(3)})`,
        `${prev.changed.length} of ${prev.compared} tickers changed domain`,
        ...changedLines(prev.changed),
      ]
    : ['first recorded run of this universe: no drift to measure', conf];
  const solid = fig.domains.map(colourOf);
  const datasets = [
    ...(prev
      ? [
          {
            label: `previous run ${prev.runId.slice(0, 8)}`,
            data: prev.share.map((v) => v * 100),
            // Pale fill with the domain's own outline: same hue as this run's bar, so pairs read per domain.
            backgroundColor: solid.map((c) => withAlpha(c, 0.3)),
            borderColor: solid,
            borderWidth: 1.5,
            maxBarThickness: 40,
          },
        ]
      : []),
    { label: 'this run', data: drift.share.map((v) => v * 100), backgroundColor: solid, borderColor: solid, borderWidth: 1.5, maxBarThickness: 40 },
  ];
  const grey = '#7F7F7F';
  const generateLabels = (chart: Chart): LegendItem[] =>
    chart.data.datasets.map((ds, i) => {
      const pale = prev !== null && i === 0;
      return { text: String(ds.label ?? ''), datasetIndex: i, fillStyle: pale ? withAlpha(grey, 0.3) : grey, strokeStyle: grey, lineWidth: 1.5, hidden: false };
    });
  const top = Math.max(...drift.share, ...(prev?.share ?? [0])) * 100;
  return panel<'bar'>(
    {
      type: 'bar',
      data: { labels: fig.domains, datasets },
      options: {
        plugins: {
          title: panelTitle(title),
          subtitle: { display: true, text: subtitle, color: '#555555', font: { size: 11 }, padding: { bottom: 8 } },
          legend: { position: 'bottom', labels: { boxWidth: 14, font: { size: 11 }, generateLabels } },
          tooltip: { enabled: false },
        },
        scales: {
          x: { grid: { display: false }, ticks: { font: { size: 11 }, autoSkip: false, maxRotation: 0 } },
          // Head-room for the percent labels above the bars.
          y: { min: 0, suggestedMax: Math.min(100, top * 1.15 + 2), grid, title: axisTitle('Share of routed tickers (%)') },
        },
      },
      plugins: [shareLabels()],
    },
    width,
  );
}

export function timeSeriesPanels(fig: TimeSeriesFigure): Panel[] {
  return [volatilityRegimes(fig), routingMix(fig), routingDrift(fig)];
}
