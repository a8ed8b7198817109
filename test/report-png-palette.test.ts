import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { encodePaletteColours, encodePalettePng } from '../src/report/png-palette.js';
import { Rng } from '../src/util/random.js';

async function decode(png: Buffer) {
  const meta = await sharp(png).metadata();
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { meta, data, width: info.width, height: info.height };
}

/** `w × h` RGB pixels in vertical stripes, one colour per stripe, stripe `k` `widths[k]` pixels wide. */
function stripes(colours: number[][], widths: number[], h: number): { rgb: Buffer; w: number } {
  const w = widths.reduce((a, b) => a + b, 0);
  const rgb = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) {
    let x = 0;
    colours.forEach((c, k) => {
      for (let j = 0; j < widths[k]!; j++, x++) rgb.set(c, (y * w + x) * 3);
    });
  }
  return { rgb, w };
}

describe('encodePalettePng', () => {
  it('stores an image of at most 256 colours exactly, as an 8-bit palette PNG', async () => {
    const rng = new Rng(5);
    const colours = Array.from({ length: 256 }, () => [rng.int(256), rng.int(256), rng.int(256)]);
    const { rgb, w } = stripes(colours, colours.map((_, k) => 1 + (k % 3)), 7);
    const png = encodePalettePng(rgb, w, 7);
    const img = await decode(png);
    expect(img.meta.format).toBe('png');
    expect(img.meta.isPalette).toBe(true);
    expect(img.meta.bitsPerSample).toBe(8);
    expect([img.width, img.height]).toEqual([w, 7]);
    expect(Buffer.compare(img.data, rgb)).toBe(0);
  });

  it('keeps the most frequent colours exact and maps the rest to a near one when there are more than 256', async () => {
    const rng = new Rng(9);
    // 300 colours: 200 wide stripes (frequent) and 100 one-pixel stripes that are each a slight shift of one of them.
    const base = Array.from({ length: 200 }, () => [rng.int(240), rng.int(240), rng.int(240)]);
    const rare = Array.from({ length: 100 }, (_, k) => base[k]!.map((v) => v + 3));
    const colours = [...base, ...rare];
    const { rgb, w } = stripes(colours, colours.map((_, k) => (k < 200 ? 10 : 1)), 4);
    const img = await decode(encodePalettePng(rgb, w, 4));
    let maxErr = 0;
    for (let i = 0; i < rgb.length; i += 3) {
      const e = Math.abs(img.data[i]! - rgb[i]!) + Math.abs(img.data[i + 1]! - rgb[i + 1]!) + Math.abs(img.data[i + 2]! - rgb[i + 2]!);
      maxErr = Math.max(maxErr, e);
      // Every pixel of the 200 frequent colours is exact.
      if (i / 3 % w < 2000) expect(e).toBe(0);
    }
    expect(maxErr).toBeGreaterThan(0);
    expect(maxErr).toBeLessThanOrEqual(9);
  });

  it('is deterministic', () => {
    const rng = new Rng(1);
    const rgb = Buffer.from(Array.from({ length: 64 * 64 * 3 }, () => rng.int(256)));
    expect(Buffer.compare(encodePalettePng(rgb, 64, 64), encodePalettePng(rgb, 64, 64))).toBe(0);
  });

  it('takes 0xRRGGBB words as well, ignoring their high byte, with the same output as RGB bytes', () => {
    const rng = new Rng(3);
    const w = 300;
    const h = 30;
    // ~9,000 distinct colours: the colour table grows several times on the way.
    const rgb = Buffer.from(Array.from({ length: w * h * 3 }, () => rng.int(256)));
    const words = new Uint32Array(w * h);
    for (let p = 0; p < words.length; p++) words[p] = ((p % 7) << 24) | (rgb[3 * p]! << 16) | (rgb[3 * p + 1]! << 8) | rgb[3 * p + 2]!;
    expect(Buffer.compare(encodePaletteColours(words, w, h), encodePalettePng(rgb, w, h))).toBe(0);
    expect(() => encodePaletteColours(new Uint32Array(5), 2, 3)).toThrow('Expected 6 pixels for 2 × 3 but received 5');
  });

  it('counts colours right through the growth of its colour table: the 200 most frequent stay exact', async () => {
    const rng = new Rng(4);
    // 200 frequent colours (12 px each) among 5,000 one-pixel colours, all distinct.
    const seen = new Set<number>();
    const pick = () => {
      for (;;) {
        const c = rng.int(1 << 24);
        if (!seen.has(c)) return seen.add(c), c;
      }
    };
    const frequent = Array.from({ length: 200 }, pick);
    const rare = Array.from({ length: 5000 }, pick);
    // Distinct colours in order of appearance; the table (4,096 slots, half full at most) grows on the 2,049th and the
    // 4,097th, which are frequent ones here, as is every 26th.
    const order: number[] = [];
    let f = 0;
    let r = 0;
    for (let i = 0; i < 5200; i++) order.push(i === 2048 || i === 4096 || (i % 26 === 0 && i <= 26 * 197) ? frequent[f++]! : rare[r++]!);
    expect([f, r]).toEqual([200, 5000]);
    const top = new Set(frequent);
    const px = order.flatMap((c) => (top.has(c) ? Array<number>(12).fill(c) : [c]));
    const w = px.length / 8;
    const words = Uint32Array.from(px);
    const img = await decode(encodePaletteColours(words, w, 8));
    let exact = 0;
    for (let p = 0; p < px.length; p++) {
      if (!top.has(px[p]!)) continue;
      const got = (img.data[3 * p]! << 16) | (img.data[3 * p + 1]! << 8) | img.data[3 * p + 2]!;
      expect(got).toBe(px[p]);
      exact++;
    }
    expect(exact).toBe(2400);
  });

  it('rejects sizes that do not match the pixels, naming what it expected', () => {
    expect(() => encodePalettePng(Buffer.alloc(12), 2, 3)).toThrow('Expected 18 bytes of RGB pixels for 2 × 3 but received 12');
    expect(() => encodePalettePng(Buffer.alloc(0), 0, 3)).toThrow('Expected positive integer width and height for encodePalettePng but received 0 × 3');
    expect(() => encodePalettePng(Buffer.alloc(3), 1, 1, { compressionLevel: 10 })).toThrow('Expected integer in 0..9 for compressionLevel but received 10');
  });
});
