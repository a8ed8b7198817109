import { renderPanel, type PanelPixels } from './canvas.js';
import { conditionsPanels } from './charts/conditions.js';
import type { Panel } from './charts/common.js';
import { performancePanels } from './charts/performance.js';
import { routingPanels } from './charts/routing.js';
import { timeSeriesPanels } from './charts/time-series.js';
import { composeFigure } from './compose.js';
import type { Figure } from './figure-types.js';

function panelsOf(fig: Figure): Panel[] {
  switch (fig.kind) {
    case 'routing':
      return routingPanels(fig);
    case 'conditions':
      return conditionsPanels(fig);
    case 'timeSeries':
      return timeSeriesPanels(fig);
    case 'performance':
      return performancePanels(fig);
  }
}

/** Renders one figure to PNG bytes in the calling thread. */
export async function renderFigure(fig: Figure): Promise<Buffer> {
  const panels: PanelPixels[] = panelsOf(fig).map(renderPanel);
  return composeFigure(panels, { title: fig.title, subtitle: fig.subtitle, layout: fig.kind === 'performance' ? 'column' : 'row' });
}
