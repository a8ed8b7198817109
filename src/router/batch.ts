import type { FeatureSeries } from '../data/types.js';
import type { TokenBatch } from './native.js';

/** Several tickers' tokens in one batch; series `i` occupies tokens `offsets[i]` to `offsets[i + 1]`. */
export interface ConcatenatedBatch extends TokenBatch {
  offsets: number[];
}

/**
 * Concatenates feature series into one router batch, so a run, an evaluation or a training set is routed in one
 * native call rather than one per ticker. `alloc` makes each zeroed array of the given length (e.g. in shared memory).
 */
export function concatSeries(
  series: readonly Pick<FeatureSeries, 'x' | 'vol' | 'risk'>[],
  hidden: number,
  alloc: (length: number) => Float32Array = (length) => new Float32Array(length),
): ConcatenatedBatch {
  const offsets = [0];
  for (const s of series) offsets.push(offsets[offsets.length - 1]! + s.vol.length);
  const total = offsets[offsets.length - 1]!;
  const x = alloc(total * hidden);
  const vol = alloc(total);
  const risk = alloc(total);
  series.forEach((s, i) => {
    const at = offsets[i]!;
    x.set(s.x, at * hidden);
    vol.set(s.vol, at);
    risk.set(s.risk, at);
  });
  return { x, vol, risk, offsets };
}
