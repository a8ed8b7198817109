import { ChartJSNodeCanvas } from 'chartjs-node-canvas';
import type { Panel } from './charts/common.js';
import { BACKGROUND, FONT_FAMILY, GRID_COLOUR, PIXEL_RATIO, TEXT_COLOUR } from './theme.js';

// One renderer per panel size and thread: each ChartJSNodeCanvas loads its own copy of chart.js (~20 ms).
const renderers = new Map<string, ChartJSNodeCanvas>();

function rendererFor(width: number, height: number): ChartJSNodeCanvas {
  const key = `${width}x${height}`;
  let r = renderers.get(key);
  if (!r) {
    r = new ChartJSNodeCanvas({
      width,
      height,
      backgroundColour: BACKGROUND,
      chartCallback: (Chart) => {
        Chart.defaults.font.family = FONT_FAMILY;
        Chart.defaults.color = TEXT_COLOUR;
        Chart.defaults.borderColor = GRID_COLOUR;
        Chart.defaults.animation = false;
        Chart.defaults.devicePixelRatio = PIXEL_RATIO;
      },
    });
    renderers.set(key, r);
  }
  return r;
}

/** Uncompressed RGBA pixels of a drawn panel. */
export interface PanelPixels {
  data: Buffer;
  width: number;
  height: number;
}

/**
 * Draws one panel at `width·PIXEL_RATIO × height·PIXEL_RATIO` pixels. Raw pixels skip a PNG encode and decode per
 * panel (~150 ms each at this size); the figure is encoded once, after composition.
 */
export function renderPanel(p: Panel): PanelPixels {
  const options = p.config.options ?? {};
  // Panels sit edge to edge in the figure; the padding keeps neighbouring axes and labels apart.
  const layout = { padding: { top: 6, right: 18, bottom: 8, left: 12 }, ...options.layout };
  const config = { ...p.config, options: { ...options, layout, devicePixelRatio: PIXEL_RATIO, animation: false as const } };
  // 'raw' (premultiplied ARGB32 in native byte order) is a canvas format the renderer's typings omit; canvas only
  // produces it synchronously (the callback form never calls back for it).
  const data = rendererFor(p.width, p.height).renderToBufferSync(config, 'raw' as 'image/png');
  const width = p.width * PIXEL_RATIO;
  const height = p.height * PIXEL_RATIO;
  if (data.length !== width * height * 4) {
    throw new RangeError(`Expected ${width * height * 4} bytes for panel pixels but received ${data.length}`);
  }
  bgraToRgba(data);
  return { data, width, height };
}

/**
 * Cairo's ARGB32 is B,G,R,A in memory on little-endian machines (all Node targets here). Alpha is always 255 after
 * the white background fill, so the premultiplication needs no undoing.
 */
function bgraToRgba(px: Buffer): void {
  for (let i = 0; i < px.length; i += 4) {
    const b = px[i]!;
    px[i] = px[i + 2]!;
    px[i + 2] = b;
  }
}
