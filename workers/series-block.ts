import { DOMAINS, domainIndex } from '../src/domains.js';
import type { TickerSeries } from '../src/report/types.js';

/**
 * Binary block of a run's routed per-day series, stored in Redis between the route and report jobs (JSON would be
 * ~5× larger and slow to parse for hundreds of ticker-years). Little-endian:
 *
 *   header  : magic "MOES" | u32 version | u32 count
 *   per item: u8 tickerLen | ticker (ASCII) | i8 class index (-1 = unknown) | u8 pad | u32 days
 *             | i32 dates[days] | f32 vol[days] | f32 ret[days] | f32 confidence[days] | u8 assign[days]
 */

export const SERIES_BLOCK_MAGIC = 'MOES';
export const SERIES_BLOCK_VERSION = 1;

export class SeriesBlockError extends Error {
  readonly code = 'BAD_SERIES_BLOCK';
  constructor(message: string) {
    super(message);
    this.name = this.constructor.name;
  }
}

export function encodeSeriesBlock(series: readonly TickerSeries[]): Buffer {
  let size = 12;
  for (const s of series) {
    const n = s.dates.length;
    for (const [name, len] of [['vol', s.vol.length], ['ret', s.ret.length], ['confidence', s.confidence.length], ['assign', s.assign.length]] as const) {
      if (len !== n) throw new SeriesBlockError(`Expected length ${n} for ${s.ticker}.${name} but received ${len}`);
    }
    if (s.ticker.length === 0 || s.ticker.length > 255) throw new SeriesBlockError(`Expected 1..255 characters for ticker but received ${s.ticker.length}`);
    size += 1 + s.ticker.length + 2 + 4 + n * (4 * 4 + 1);
  }
  const b = Buffer.alloc(size);
  b.write(SERIES_BLOCK_MAGIC, 0, 'ascii');
  b.writeUInt32LE(SERIES_BLOCK_VERSION, 4);
  b.writeUInt32LE(series.length, 8);
  let o = 12;
  for (const s of series) {
    const n = s.dates.length;
    b.writeUInt8(s.ticker.length, o);
    o += 1;
    o += b.write(s.ticker, o, 'ascii');
    b.writeInt8(s.class === undefined ? -1 : domainIndex(s.class), o);
    o += 2;
    b.writeUInt32LE(n, o);
    o += 4;
    for (let i = 0; i < n; i++, o += 4) b.writeInt32LE(s.dates[i]!, o);
    for (const arr of [s.vol, s.ret, s.confidence]) for (let i = 0; i < n; i++, o += 4) b.writeFloatLE(arr[i]!, o);
    for (let i = 0; i < n; i++, o += 1) b.writeUInt8(s.assign[i]!, o);
  }
  return b;
}

export function decodeSeriesBlock(b: Buffer): TickerSeries[] {
  const need = (o: number, len: number) => {
    if (o + len > b.length) throw new SeriesBlockError(`Expected at least ${o + len} bytes for series block but received ${b.length}`);
  };
  need(0, 12);
  const magic = b.toString('ascii', 0, 4);
  if (magic !== SERIES_BLOCK_MAGIC) throw new SeriesBlockError(`Expected magic "${SERIES_BLOCK_MAGIC}" for series block but received ${JSON.stringify(magic)}`);
  const version = b.readUInt32LE(4);
  if (version !== SERIES_BLOCK_VERSION) throw new SeriesBlockError(`Expected version ${SERIES_BLOCK_VERSION} for series block but received ${version}`);
  const count = b.readUInt32LE(8);
  const out: TickerSeries[] = [];
  let o = 12;
  for (let k = 0; k < count; k++) {
    need(o, 1);
    const len = b.readUInt8(o);
    o += 1;
    need(o, len + 6);
    const ticker = b.toString('ascii', o, o + len);
    o += len;
    const cls = b.readInt8(o);
    o += 2;
    const n = b.readUInt32LE(o);
    o += 4;
    need(o, n * 17);
    const dates = new Int32Array(n);
    for (let i = 0; i < n; i++, o += 4) dates[i] = b.readInt32LE(o);
    const vol = new Float32Array(n);
    const ret = new Float32Array(n);
    const confidence = new Float32Array(n);
    for (const arr of [vol, ret, confidence]) for (let i = 0; i < n; i++, o += 4) arr[i] = b.readFloatLE(o);
    const assign = new Uint8Array(b.subarray(o, o + n));
    o += n;
    const s: TickerSeries = { ticker, dates, vol, ret, confidence, assign };
    const domain = DOMAINS[cls];
    if (cls >= 0 && domain !== undefined) s.class = domain;
    out.push(s);
  }
  return out;
}
