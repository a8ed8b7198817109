import type { Chart, LegendItem, Plugin, ScriptableScaleContext } from 'chart.js';
import type { ConditionPoint, ConditionsFigure } from '../figure-types.js';
import { DOMAIN_POINT_STYLES, GRID_COLOUR, OKABE_ITO, colourOf } from '../theme.js';
import { NO_TICKERS, axisTitle, drawLabels, grid, messagePanel, panel, panelTitle, type Panel } from './common.js';

/** Every point is labelled up to this many tickers; beyond it only the most extreme ones are. */
const LABEL_ALL_UP_TO = 20;
const LABEL_EXTREMES = 10;
/**
 * Beyond this many tickers the markers (radius 5 with a white rim) cover one another into one blot: they become small
 * rimless dots, so the cloud's density stays readable and 100,000 points render in about 5 s instead of more.
 */
export const SCATTER_DOTS_FROM = 2_000;

const zeroLine = { ...grid, color: (c: ScriptableScaleContext) => (c.tick?.value === 0 ? '#8C8C8C' : GRID_COLOUR) };

/** Tickers far from the centre of the cloud (in units of each axis' spread) are the ones worth naming. */
function labelled(points: ConditionPoint[]): Set<string> {
  if (points.length <= LABEL_ALL_UP_TO) return new Set(points.map((p) => p.ticker));
  const mean = (f: (p: ConditionPoint) => number) => points.reduce((a, p) => a + f(p), 0) / points.length;
  const sd = (f: (p: ConditionPoint) => number, m: number) =>
    Math.sqrt(points.reduce((a, p) => a + (f(p) - m) ** 2, 0) / points.length) || 1;
  const mv = mean((p) => p.vol);
  const mr = mean((p) => p.ret);
  const sv = sd((p) => p.vol, mv);
  const sr = sd((p) => p.ret, mr);
  const score = (p: ConditionPoint) => ((p.vol - mv) / sv) ** 2 + ((p.ret - mr) / sr) ** 2;
  return new Set([...points].sort((a, b) => score(b) - score(a)).slice(0, LABEL_EXTREMES).map((p) => p.ticker));
}

function tickerLabels(groups: ConditionPoint[][], names: Set<string>): Plugin<'scatter'> {
  return {
    id: 'tickerLabels',
    afterDatasetsDraw(chart: Chart<'scatter'>) {
      const labels: { x: number; y: number; text: string }[] = [];
      groups.forEach((group, k) => {
        const meta = chart.getDatasetMeta(k);
        group.forEach((p, i) => {
          const el = meta.data[i];
          if (el && names.has(p.ticker)) labels.push({ x: el.x, y: el.y, text: p.ticker });
        });
      });
      drawLabels(chart, labels, 11);
    },
  };
}

export function returnVsVolatility(fig: ConditionsFigure): Panel {
  const title = 'Annualised return against volatility, per ticker';
  if (fig.points.length === 0) return messagePanel(title, NO_TICKERS);
  const classes = fig.classes.map((c) => c.name);
  const groups = classes.map((c) => fig.points.filter((p) => p.cls === c));
  const usedDomains = fig.domains.map((_, d) => fig.points.some((p) => p.domain === d));
  const dots = fig.points.length >= SCATTER_DOTS_FROM;
  const classSets = groups.map((group, k) => ({
    label: classes[k] ?? '',
    data: group.map((p) => ({ x: p.vol, y: p.ret })),
    pointStyle: group.map((p) => DOMAIN_POINT_STYLES[p.domain] ?? 'circle'),
    // Opaque fills keep orange and vermillion apart (translucent, they blend towards the same tint); a white rim
    // separates overlapping points instead.
    backgroundColor: colourOf(classes[k] ?? ''),
    borderColor: '#FFFFFF',
    borderWidth: dots ? 0 : 1,
    pointRadius: dots ? 1.5 : fig.points.length > 50 ? 5 : 7,
  }));
  // Data-less sets give the legend one entry per point shape (the chosen domain).
  const shapeSets = fig.domains
    .map((d, i) => ({ d, i }))
    .filter(({ i }) => usedDomains[i])
    .map(({ d, i }) => ({
      label: `→ ${d}`,
      data: [] as { x: number; y: number }[],
      pointStyle: DOMAIN_POINT_STYLES[i] ?? 'circle',
      backgroundColor: '#FFFFFF',
      borderColor: OKABE_ITO.black,
      borderWidth: 1.5,
      pointRadius: 6,
    }));
  const generateLabels = (chart: Chart): LegendItem[] =>
    chart.data.datasets.map((ds, i) => {
      const isClass = i < classSets.length;
      const set = isClass ? classSets[i] : shapeSets[i - classSets.length];
      return {
        text: String(ds.label ?? ''),
        datasetIndex: i,
        fillStyle: set?.backgroundColor ?? '#FFFFFF',
        strokeStyle: isClass ? (set?.backgroundColor ?? OKABE_ITO.black) : OKABE_ITO.black,
        lineWidth: 1.5,
        pointStyle: isClass ? 'circle' : (shapeSets[i - classSets.length]?.pointStyle ?? 'circle'),
        hidden: false,
      };
    });
  return panel<'scatter'>({
    type: 'scatter',
    data: { datasets: [...classSets, ...shapeSets] },
    options: {
      plugins: {
        title: panelTitle(title),
        subtitle: {
          display: true,
          // Dots too small to show a shape: the chosen domains are in the routing and performance figures.
          text: dots ? `colour: asset class · ${fig.points.length.toLocaleString('en-US')} tickers as dots` : 'colour: asset class · shape: chosen domain',
          color: '#555555',
          font: { size: 11 },
          padding: { bottom: 6 },
        },
        legend: { position: 'bottom', labels: { usePointStyle: true, boxHeight: 8, padding: 12, font: { size: 11 }, generateLabels } },
        tooltip: { enabled: false },
      },
      scales: {
        x: { type: 'linear', beginAtZero: true, grace: '5%', grid, title: axisTitle('Annualised volatility (%)') },
        // The zero line stays in view, so gains and losses read at a glance even for one ticker.
        y: { type: 'linear', grace: '8%', suggestedMin: 0, suggestedMax: 0, grid: zeroLine, title: axisTitle('Annualised log return (%)') },
      },
    },
    plugins: [tickerLabels(groups, labelled(fig.points))],
  });
}

export function statsByClass(fig: ConditionsFigure): Panel {
  const title = 'Mean volatility and return by asset class';
  if (fig.classes.length === 0) return messagePanel(title, NO_TICKERS, 600);
  return panel<'bar'>(
    {
      type: 'bar',
      data: {
        labels: fig.classes.map((c) => [c.name, c.condition, `n = ${c.tickers}`]),
        datasets: [
          { label: 'Ann. volatility (%)', data: fig.classes.map((c) => c.vol), backgroundColor: OKABE_ITO.skyBlue, maxBarThickness: 48 },
          { label: 'Ann. return (%)', data: fig.classes.map((c) => c.ret), backgroundColor: OKABE_ITO.purple, maxBarThickness: 48 },
        ],
      },
      options: {
        plugins: {
          title: panelTitle(title),
          legend: { position: 'bottom', labels: { boxWidth: 14, font: { size: 11 } } },
          tooltip: { enabled: false },
        },
        scales: {
          x: { grid: { display: false }, ticks: { font: { size: fig.classes.length > 4 ? 10 : 11 }, autoSkip: false, maxRotation: 0 } },
          y: { grid: zeroLine, title: axisTitle('Percent per year'), grace: '5%' },
        },
      },
    },
    600,
  );
}

export function conditionsPanels(fig: ConditionsFigure): Panel[] {
  return [returnVsVolatility(fig), statsByClass(fig)];
}
