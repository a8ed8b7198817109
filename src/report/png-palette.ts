import { deflateSync } from 'node:zlib';

/**
 * Palette PNG encoder for chart images. Charts hold a few hundred colours that matter (fills, lines, text, grid,
 * bands) and a long tail of anti-aliasing blends between them, so a popularity palette keeps every colour the
 * chart drew in flat areas exactly and maps the tail to its nearest palette colour.
 *
 * Why not sharp's `palette: true`: libimagequant builds its palette by clustering and took 0.3–1.3 s on the
 * 5.8-megapixel performance figure of a 1,000-ticker run (2-core machine), most of the report's time budget. This
 * encoder takes ~0.1 s for the same figure; files are within a few percent of libimagequant's at the same 256
 * colours, because both end in the same deflate.
 */

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const MAX_COLOURS = 256;
/** Palette slots filled by popularity; the rest go to the colours the popular ones represent worst. */
const POPULAR_COLOURS = 192;

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(parts: readonly Buffer[]): number {
  let c = 0xffffffff;
  for (const b of parts) for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'ascii');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32([head.subarray(4), data]), 0);
  return Buffer.concat([head, data, crc]);
}

/**
 * Distinct colours of an image and their pixel counts, in an open-addressing hash table keyed by the 24-bit colour
 * (a JS `Map` of boxed numbers took most of the encoder's time on anti-aliased charts). Slot `s` holds colour
 * `keys[s]` (−1: empty) seen `counts[s]` times; `index[s]` is filled later with the colour's palette entry.
 */
class ColourTable {
  keys: Int32Array;
  counts: Int32Array;
  index: Uint8Array;
  size = 0;
  private mask: number;
  private shift: number;

  constructor(bits = 12) {
    this.keys = new Int32Array(1 << bits).fill(-1);
    this.counts = new Int32Array(1 << bits);
    this.index = new Uint8Array(1 << bits);
    this.mask = (1 << bits) - 1;
    this.shift = 32 - bits;
  }

  /** Slot of colour `c` (0..0xffffff), claimed for it when absent. */
  slot(c: number): number {
    let s = Math.imul(c, 0x9e3779b1) >>> this.shift;
    for (;;) {
      const k = this.keys[s]!;
      if (k === c) return s;
      if (k === -1) {
        this.keys[s] = c;
        if (++this.size * 2 > this.keys.length) {
          this.grow();
          return this.slot(c);
        }
        return s;
      }
      s = (s + 1) & this.mask;
    }
  }

  private grow(): void {
    const { keys, counts } = this;
    const bits = 33 - this.shift;
    this.keys = new Int32Array(1 << bits).fill(-1);
    this.counts = new Int32Array(1 << bits);
    this.index = new Uint8Array(1 << bits);
    this.mask = (1 << bits) - 1;
    this.shift = 32 - bits;
    this.size = 0;
    for (let i = 0; i < keys.length; i++) {
      if (keys[i]! !== -1) this.counts[this.slot(keys[i]!)] = counts[i]!;
    }
  }
}

/**
 * Pixel counts per colour. Counting whole runs of equal pixels keeps table updates to the pixels where the colour
 * changes: a few percent of a chart, whose area is mostly flat fills.
 */
function histogram(colours: Uint32Array): ColourTable {
  const table = new ColourTable();
  const n = colours.length;
  let p = 0;
  while (p < n) {
    const c = colours[p]! & 0xffffff;
    let q = p + 1;
    while (q < n && (colours[q]! & 0xffffff) === c) q++;
    const slot = table.slot(c); // first: claiming a slot may grow the table and replace its arrays
    table.counts[slot] = table.counts[slot]! + q - p;
    p = q;
  }
  return table;
}

function distance(a: number, b: number): number {
  const dr = (a >>> 16) - (b >>> 16);
  const dg = ((a >>> 8) & 0xff) - ((b >>> 8) & 0xff);
  const db = (a & 0xff) - (b & 0xff);
  return 2 * dr * dr + 4 * dg * dg + 3 * db * db;
}

/**
 * The most frequent colours, then, greedily, the colour whose pixels are worst served (count × distance to its
 * nearest palette colour) until 256: popularity alone left blends of two saturated colours (overlapping scatter
 * points) up to 150/765 off; with the greedy slots the largest error on the 1,000-ticker panels is 18–61 (libimagequant 22–35) and the mean error lower than libimagequant's.
 */
function choosePalette(table: ColourTable): number[] {
  const byCount: [number, number][] = [];
  for (let s = 0; s < table.keys.length; s++) if (table.keys[s]! !== -1) byCount.push([table.keys[s]!, table.counts[s]!]);
  byCount.sort((a, b) => b[1] - a[1] || a[0] - b[0]);
  if (byCount.length <= MAX_COLOURS) return byCount.map(([c]) => c);
  const palette = byCount.slice(0, POPULAR_COLOURS).map(([c]) => c);
  const rest = byCount.slice(POPULAR_COLOURS);
  const colour = new Int32Array(rest.map(([c]) => c));
  const weight = new Float64Array(rest.map(([, n]) => n));
  const dist = new Float64Array(rest.length);
  for (let i = 0; i < rest.length; i++) dist[i] = distance(colour[i]!, palette[nearest(colour[i]!, palette)]!);
  while (palette.length < MAX_COLOURS) {
    let best = -1;
    let bestScore = 0;
    for (let i = 0; i < rest.length; i++) {
      const score = dist[i]! * weight[i]!;
      if (score > bestScore) {
        bestScore = score;
        best = i;
      }
    }
    if (best < 0) break;
    const c = colour[best]!;
    palette.push(c);
    for (let i = 0; i < rest.length; i++) {
      const d = distance(colour[i]!, c);
      if (d < dist[i]!) dist[i] = d;
    }
  }
  return palette;
}

/**
 * Nearest palette entry by a weighted RGB distance (2, 4, 3: a cheap stand-in for perceived difference, green
 * weighing most), so an anti-aliased pixel goes to the colour it looks closest to.
 */
function nearest(c: number, palette: readonly number[]): number {
  const r = c >>> 16;
  const g = (c >>> 8) & 0xff;
  const b = c & 0xff;
  let best = 0;
  let bestD = Infinity;
  for (let k = 0; k < palette.length; k++) {
    const p = palette[k]!;
    const dr = r - (p >>> 16);
    const dg = g - ((p >>> 8) & 0xff);
    const db = b - (p & 0xff);
    const d = 2 * dr * dr + 4 * dg * dg + 3 * db * db;
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best;
}

export interface PalettePngOptions {
  /** zlib level 0–9. @defaultValue 9 */
  compressionLevel?: number;
}

/**
 * Encodes packed 8-bit RGB pixels (`width × height × 3` bytes) as an 8-bit palette PNG of at most 256 colours.
 * Images with ≤ 256 colours are stored exactly.
 */
export function encodePalettePng(rgb: Buffer, width: number, height: number, opts: PalettePngOptions = {}): Buffer {
  checkSize(width, height);
  if (rgb.length !== width * height * 3) {
    throw new RangeError(`Expected ${width * height * 3} bytes of RGB pixels for ${width} × ${height} but received ${rgb.length}`);
  }
  const colours = colourScratch(width * height);
  for (let p = 0, i = 0; p < colours.length; p++, i += 3) colours[p] = (rgb[i]! << 16) | (rgb[i + 1]! << 8) | rgb[i + 2]!;
  return encodePaletteColours(colours, width, height, opts);
}

/**
 * The same encoder for pixels as 32-bit words whose low 24 bits are the colour `0xRRGGBB` (the high byte is
 * ignored); `encodePalettePng` converts its RGB bytes into such words. Same output as `encodePalettePng` for the
 * same pixels.
 */
export function encodePaletteColours(colours: Uint32Array, width: number, height: number, opts: PalettePngOptions = {}): Buffer {
  checkSize(width, height);
  if (colours.length !== width * height) {
    throw new RangeError(`Expected ${width * height} pixels for ${width} × ${height} but received ${colours.length}`);
  }
  const level = opts.compressionLevel ?? 9;
  if (!Number.isInteger(level) || level < 0 || level > 9) {
    throw new RangeError(`Expected integer in 0..9 for compressionLevel but received ${String(level)}`);
  }
  const table = histogram(colours);
  const palette = choosePalette(table);
  const exact = new Map<number, number>();
  palette.forEach((c, k) => exact.set(c, k));
  // Every colour of the image is in the table: give each its palette entry once (itself, or the nearest).
  for (let s = 0; s < table.keys.length; s++) {
    const c = table.keys[s]!;
    if (c !== -1) table.index[s] = exact.get(c) ?? nearest(c, palette);
  }

  // One filter byte (0: none) per row, then one palette index per pixel. Filters rarely pay off on palette images.
  const raw = indexScratch(height * (width + 1));
  let prev = -1;
  let prevIdx = 0;
  for (let y = 0, i = 0; y < height; y++) {
    let o = y * (width + 1);
    raw[o++] = 0;
    for (let x = 0; x < width; x++, i++) {
      const c = colours[i]! & 0xffffff;
      if (c !== prev) {
        prev = c;
        prevIdx = table.index[table.slot(c)]!;
      }
      raw[o++] = prevIdx;
    }
  }

  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 3; // colour type: palette
  ihdr[10] = 0; // deflate
  ihdr[11] = 0; // adaptive filtering (per-row filter byte)
  ihdr[12] = 0; // no interlace
  const plte = Buffer.alloc(palette.length * 3);
  palette.forEach((c, k) => {
    plte[k * 3] = c >>> 16;
    plte[k * 3 + 1] = (c >>> 8) & 0xff;
    plte[k * 3 + 2] = c & 0xff;
  });
  return Buffer.concat([
    PNG_SIGNATURE,
    chunk('IHDR', ihdr),
    chunk('PLTE', plte),
    chunk('IDAT', deflateSync(raw, { level })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/**
 * The pixels as colour words and the palette indices before deflate, reused across images on a thread: the first
 * touches of freshly mapped memory are slow on the 2-core development VM (a new 19 MB array took ~50 ms to fill once,
 * 0.6 ms the second time), and a fresh buffer per figure paid that every time. Safe because encoding is synchronous.
 */
let colourBuffer = new Uint32Array(0);

function colourScratch(n: number): Uint32Array {
  if (colourBuffer.length < n) colourBuffer = new Uint32Array(n);
  return colourBuffer.subarray(0, n);
}

let indexBuffer = Buffer.alloc(0);

function indexScratch(n: number): Buffer {
  if (indexBuffer.length < n) indexBuffer = Buffer.allocUnsafeSlow(n);
  return indexBuffer.subarray(0, n);
}

function checkSize(width: number, height: number): void {
  if (!Number.isInteger(width) || width < 1 || !Number.isInteger(height) || height < 1) {
    throw new RangeError(`Expected positive integer width and height for encodePalettePng but received ${width} × ${height}`);
  }
}
