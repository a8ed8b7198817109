import sharp from 'sharp';
import { expect } from 'vitest';

/** A PNG that decodes, has a real size, is opaque and is not one flat colour. */
export async function expectDrawnPng(file: string): Promise<void> {
  const img = sharp(file);
  const meta = await img.metadata();
  expect(meta.format).toBe('png');
  expect(meta.width).toBeGreaterThanOrEqual(600);
  expect(meta.height).toBeGreaterThanOrEqual(400);
  const stats = await img.stats();
  expect(stats.isOpaque).toBe(true);
  const spread = Math.max(...stats.channels.slice(0, 3).map((c) => c.stdev));
  expect(spread).toBeGreaterThan(5);
}
