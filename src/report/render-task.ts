/**
 * Piscina task file: renders one figure from its plain description and hands the PNG bytes back without a copy.
 * Loaded by `createRenderPool`; runs in a worker thread, never on the thread that owns the queues.
 */
import { Piscina } from 'piscina';
import type { Figure } from './figure-types.js';
import { renderFigure } from './render-figure.js';

export default async function renderTask(fig: Figure): Promise<Uint8Array> {
  const png = await renderFigure(fig);
  const bytes = new Uint8Array(png.buffer, png.byteOffset, png.byteLength);
  // A Buffer from sharp owns its ArrayBuffer only when it is not a slice of Node's shared pool; copy when it is.
  const own = png.byteOffset === 0 && png.buffer.byteLength === png.byteLength ? bytes : bytes.slice();
  return Piscina.move(own) as Uint8Array;
}
