import type { PointStyle } from 'chart.js';
import { DOMAINS } from '../domains.js';

/**
 * Okabe–Ito palette (Okabe & Ito 2008, "Color Universal Design"): eight hues that stay distinct under the common
 * forms of colour-blindness. Domains and asset classes use the same hue for the same name so a reader can match a
 * class to the domain it should route to.
 */
export const OKABE_ITO = {
  orange: '#E69F00',
  skyBlue: '#56B4E9',
  green: '#009E73',
  yellow: '#F0E442',
  blue: '#0072B2',
  vermillion: '#D55E00',
  purple: '#CC79A7',
  black: '#000000',
} as const;

/** Label used for tickers whose asset class the source did not know. */
export const UNKNOWN_CLASS = 'Unknown';

/** Colour per domain name (also used for the asset class of the same name); `Unknown` is a neutral grey. */
export const DOMAIN_COLOURS: Readonly<Record<string, string>> = {
  Equities: OKABE_ITO.blue,
  'Fixed Income': OKABE_ITO.orange,
  Commodities: OKABE_ITO.green,
  Derivatives: OKABE_ITO.vermillion,
  [UNKNOWN_CLASS]: '#7F7F7F',
};

/** Shape per chosen domain, so the scatter encodes class by colour and domain by shape. */
export const DOMAIN_POINT_STYLES: readonly PointStyle[] = ['circle', 'rect', 'triangle', 'rectRot'];

export function colourOf(name: string): string {
  return DOMAIN_COLOURS[name] ?? '#7F7F7F';
}

/** Hex colour with an alpha channel, e.g. for translucent fills. */
export function withAlpha(hex: string, alpha: number): string {
  const a = Math.round(Math.min(1, Math.max(0, alpha)) * 255)
    .toString(16)
    .padStart(2, '0');
  return `${hex}${a}`;
}

export const FONT_FAMILY = 'DejaVu Sans';
export const TEXT_COLOUR = '#222222';
export const GRID_COLOUR = '#E3E3E3';
export const BACKGROUND = '#FFFFFF';

/** Panel size in CSS pixels; panels are drawn at `PIXEL_RATIO` for high-density output. */
export const PANEL_WIDTH = 720;
export const PANEL_HEIGHT = 520;
export const PIXEL_RATIO = 2;

export const DOMAIN_NAMES: readonly string[] = DOMAINS;
